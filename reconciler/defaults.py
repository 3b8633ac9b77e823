"""Every default a user can change, in one place: the CLI's options, ``reconciler.toml``, the
daemon's options and the engine all read them from here, so a default is changed once.

Durations are in seconds (see :mod:`reconciler.units` for the registry's milliseconds).
"""

from __future__ import annotations

# --- talking to the registry ------------------------------------------------------------------
# Writes in flight at once (--concurrency): the write rate kept rising up to 32 and fell beyond
# (make bench: 1,000 new models, 20 ms per call), once the client's connection pools stopped
# growing with it (registry.transport).
CONCURRENCY = 32
HEALTH_CONCURRENCY = 4  # health checks in flight at once (--health-concurrency)
TIMEOUT = 10.0  # seconds per request (--timeout)
UPDATE_METHOD = "add"  # --update-method: add (409 falls back to PATCH) or patch

# --- prune ------------------------------------------------------------------------------------
MAX_DELETES = 5  # --max-deletes: prune refuses to delete more than this in one run (or window)
DELETE_WINDOW = 3600.0  # the daemon counts --max-deletes over this sliding window

# --- model files ------------------------------------------------------------------------------
MAX_FILE_BYTES = 1 << 20  # max_file_bytes: 1 MiB; a model definition is a few hundred bytes
DIRECTORY = "models.d"  # --dir

# --- stopping ---------------------------------------------------------------------------------
GRACE = 10.0  # seconds the writes in flight get after SIGINT/SIGTERM (sync, --shutdown-timeout)

# --- the daemon (reconciler watch) ------------------------------------------------------------
RESYNC_INTERVAL = 60.0  # --resync-interval: seconds between full resyncs (jittered)
HEALTH_INTERVAL = 60.0  # --health-interval: seconds between health rounds; 0 turns them off
PRUNE_GRACE = 5.0  # --prune-grace: seconds a file must stay away before its model goes
LISTEN = "127.0.0.1:9180"  # --listen: /healthz, /readyz, /metrics, /status
DEBOUNCE_MS = 50  # the file watcher's debounce
STEP_MS = 20  # the file watcher's poll step
