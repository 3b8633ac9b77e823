"""Shared fixtures: a real registry server in a subprocess, a tiny upstream for health probes,
the CLI run as a user runs it, and a temp copy of the shipped ``models.d/``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sdk_check import recorded_problems

from reconciler.server.record import RECORD_ENV

REPO = Path(__file__).resolve().parent.parent
API_PREFIX = "/api/v1/llm/models/registry"
START_DEADLINE = 15.0


@pytest.fixture(autouse=True)
def registry_calls(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test's registry calls, checked against the official SDK's models at teardown.

    Every local registry the test starts (in-process or as a subprocess, which inherits the
    environment) appends its calls to this file; the add/update bodies the reconciler sent and
    every 2xx answer must then pass ``sdk_check``, or the test errors at teardown.
    """
    path = tmp_path_factory.mktemp("calls") / "calls.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(path))
    yield path
    problems = recorded_problems(path)
    if problems:
        pytest.fail(
            "the official SDK's models reject what the registry saw:\n" + "\n".join(problems)
        )


@pytest.fixture(autouse=True)
def parse_cache_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test's CLI runs (and the subprocesses they start) keep their parse cache in a temp
    folder, never in the developer's ~/.cache."""
    path = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))
    monkeypatch.delenv("RECONCILER_NO_CACHE", raising=False)
    return path


def clean_env() -> dict[str, str]:
    """The environment without any MKA1_* setting, so a developer's real key never leaks in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MKA1_")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningRegistry:
    """A ``reconciler registry serve`` subprocess on a fixed loopback port and database."""

    url: str
    api_key: str
    db: Path
    args: list[str] = field(default_factory=list)
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
            trust_env=False,
        )

    def control(self, **settings: Any) -> dict[str, Any]:
        """POST /_control with these settings; the new state."""
        with self._client() as client:
            response = client.post("/_control", json=settings)
        response.raise_for_status()
        return response.json()

    def counts(self) -> dict[str, int]:
        """The request counters of GET /_control."""
        with self._client() as client:
            response = client.get("/_control")
        response.raise_for_status()
        return response.json()["counts"]

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def start(self) -> None:
        """Start the server (again) on the same port and database; wait until it answers."""
        assert self.process is None or self.process.poll() is not None, "already running"
        assert self.log is not None
        with open(self.log, "ab") as log:
            # Output goes to a file: a pipe nobody reads would block the server once it fills.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "registry", "serve", *self.args],
                stdout=log,
                stderr=log,
                env={**clean_env(), **self.extra_env},
                cwd=REPO,
            )
        deadline = time.monotonic() + START_DEADLINE
        with self._client() as client:
            while True:
                if self.process.poll() is not None:
                    pytest.fail(f"registry exited with {self.process.returncode}:\n{self.stderr()}")
                try:
                    client.get(API_PREFIX, timeout=1)
                    return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(
                        f"registry did not answer within {START_DEADLINE}s:\n{self.stderr()}"
                    )
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then wait for the process to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"registry ignored SIGTERM:\n{self.stderr()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def env(self) -> dict[str, str]:
        """The environment a CLI run needs to reach this registry."""
        return {**clean_env(), "MKA1_API_URL": self.url, "MKA1_API_KEY": self.api_key}


class ThreadRegistry:
    """The local registry on a thread of the test process: the app, HTTP protocol and SQLite
    store of ``registry serve``, on its own loopback port and database, without an interpreter
    to start. Tests of the process itself (signals, exit status, SIGSTOP, its stderr as
    written) use ``process_registry_factory``."""

    def __init__(
        self,
        url: str,
        api_key: str,
        db: Path,
        *,
        strict_add: bool = False,
        add_defaults: bool = False,
        immutable_from: Path | None = None,
        faults: dict[str, Any] | None = None,
    ) -> None:
        self.url, self.api_key, self.db = url, api_key, db
        self._settings = {"strict_add": strict_add, "add_defaults": add_defaults}
        self._immutable_from = immutable_from
        self._faults = faults or {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lines: list[str] = []
        self._handler: logging.Handler | None = None

    control = RunningRegistry.control
    counts = RunningRegistry.counts
    env = RunningRegistry.env
    _client = RunningRegistry._client

    def stderr(self) -> str:
        """The request log lines it wrote, as ``registry serve`` writes them to stderr."""
        return "".join(self._lines)

    def start(self) -> None:
        """Serve (again) on the same port and database; return once it listens."""
        import uvicorn

        from reconciler import server, source
        from reconciler.server.run import BoundedHttpTools, bind

        assert self._thread is None or not self._thread.is_alive(), "already running"
        immutable = []
        if self._immutable_from is not None:
            loaded = source.load_dir(self._immutable_from)
            assert loaded.ok, loaded.errors
            immutable = [dict(m.body) for _, m in sorted(loaded.models.items())]
        store = server.Store(str(self.db))
        app = server.create_app(
            store,
            self.api_key,
            faults=server.Faults(**self._faults),
            immutable=immutable,
            **self._settings,
        )
        # The first start takes a free port from the kernel (no race with another test process);
        # a restart binds the same one again.
        sock = bind("127.0.0.1", int(self.url.rsplit(":", 1)[1]) if self.url else 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            app,
            http=BoundedHttpTools,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = Server(config)

        def serve() -> None:
            try:
                self._server.run(sockets=[sock])
            finally:
                store.close()
                sock.close()

        self._thread = threading.Thread(target=serve, name=f"registry {self.url}", daemon=True)
        self._watch_log(self._thread)
        self._thread.start()
        deadline = time.monotonic() + START_DEADLINE
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                pytest.fail(f"registry thread did not start within {START_DEADLINE}s")
            time.sleep(0.005)

    def _watch_log(self, thread: threading.Thread) -> None:
        lines, name = self._lines, thread.name

        class Lines(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.threadName == name:
                    lines.append(self.format(record) + "\n")

        logger = logging.getLogger("reconciler.server")
        if self._handler is not None:
            logger.removeHandler(self._handler)
        self._handler = Lines()
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logger.addHandler(self._handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # its lines are its own, not the test process's log

    def stop(self, *, force: bool = False) -> None:
        """Stop serving (finishing the requests in flight unless ``force``); afterwards
        connections to the port are refused."""
        if self._thread is None or not self._thread.is_alive():
            return
        self._server.force_exit = force
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            pytest.fail("registry thread did not stop")

    def kill(self) -> None:
        self.stop(force=True)

    def close(self) -> None:
        self.stop(force=True)
        if self._handler is not None:
            logger = logging.getLogger("reconciler.server")
            logger.removeHandler(self._handler)
            logger.setLevel(logging.NOTSET)
            logger.propagate = True


def _faults_of(extra_args: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--latency-ms 300``-style fault flags as ``Faults`` fields (the others need a process)."""
    from reconciler.server import Faults

    faults: dict[str, Any] = {}
    args = list(extra_args)
    while args:
        flag = args.pop(0)
        name = flag.removeprefix("--").replace("-", "_")
        if not flag.startswith("--") or name not in Faults.model_fields or not args:
            raise ValueError(f"{flag}: use process_registry_factory for this flag")
        faults[name] = float(args.pop(0))
    return faults


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., ThreadRegistry]]:
    """Start registries on threads: ``registry_factory(strict_add=, add_defaults=,
    immutable_from=, extra_args=)`` (fault flags); each has its own port and database, all
    stopped at teardown."""
    started: list[ThreadRegistry] = []

    def make(
        *,
        strict_add: bool = False,
        add_defaults: bool = False,
        immutable_from: Path | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
    ) -> ThreadRegistry:
        n = len(started)
        running = ThreadRegistry(
            "",  # known once it listens
            secrets.token_urlsafe(16),
            tmp_path / f"registry-{n}.db",
            strict_add=strict_add,
            add_defaults=add_defaults,
            immutable_from=immutable_from,
            faults=_faults_of(extra_args),
        )
        started.append(running)
        running.start()
        return running

    yield make
    for running in started:
        running.close()


@pytest.fixture
def process_registry_factory(tmp_path: Path) -> Iterator[Callable[..., RunningRegistry]]:
    """Start ``registry serve`` subprocesses: ``process_registry_factory(strict_add=,
    add_defaults=, immutable_from=, extra_args=)``; each has its own port and database, all
    stopped at teardown."""
    started: list[RunningRegistry] = []

    def make(
        *,
        strict_add: bool = False,
        add_defaults: bool = False,
        immutable_from: Path | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
    ) -> RunningRegistry:
        n = len(started)
        port = free_port()
        db = tmp_path / f"registry-{n}.db"
        key = secrets.token_urlsafe(16)
        args = ["--port", str(port), "--db", str(db), "--api-key", key]
        if strict_add:
            args.append("--strict-add")
        if add_defaults:
            args.append("--add-defaults")
        if immutable_from is not None:
            args += ["--immutable-from", str(immutable_from)]
        args += list(extra_args)
        running = RunningRegistry(
            f"http://127.0.0.1:{port}", key, db, args, log=tmp_path / f"registry-{n}.log"
        )
        started.append(running)
        running.start()
        return running

    yield make
    for running in started:
        try:
            running.stop()
        finally:
            running.kill()


@pytest.fixture
def registry(registry_factory: Callable[..., ThreadRegistry]) -> ThreadRegistry:
    """A fresh registry server for one test."""
    return registry_factory()


@pytest.fixture
def registry_process(process_registry_factory: Callable[..., RunningRegistry]) -> RunningRegistry:
    """A fresh ``registry serve`` subprocess for one test."""
    return process_registry_factory()


class Upstream:
    """A tiny HTTP server on loopback standing in for a model's endpoint, for health probes."""

    def __init__(self) -> None:
        self.healthy = True
        self.requests: list[tuple[str, str]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                upstream.requests.append((self.command, self.path))
                status = 200 if upstream.healthy else 503
                body = b'{"ok": true}' if upstream.healthy else b'{"ok": false}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # shutdown() waits for the loop's next poll: poll often, so a teardown costs no 0.5 s.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; afterwards connections to ``url`` are refused."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


def cli_in_process(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``reconciler *args`` run in this process (Typer's CliRunner) with exactly ``env`` as its
    environment and ``cwd`` as its directory; the answer a subprocess gives: exit status, stdout,
    stderr (an uncaught exception is a traceback on stderr and status 1, as Python prints it).
    ``timeout`` is for the subprocess runner's signature: pytest-timeout guards a hang here."""
    from typer.testing import CliRunner

    from reconciler.cli import app

    env = clean_env() if env is None else env
    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    overrides.update(env)
    with contextlib.chdir(cwd if cwd is not None else os.getcwd()):
        result = CliRunner().invoke(app, list(args), env=overrides, prog_name="reconciler")
    code, stderr = result.exit_code, result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
        code = 1
    return subprocess.CompletedProcess(["reconciler", *args], code, result.stdout, stderr)


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``reconciler *args`` in-process (see :func:`cli_in_process`): the same parsing,
    wiring, output and exit status as a user's run, without starting an interpreter. The few
    end-to-end tests of each command use ``run_cli_process``."""
    return cli_in_process


@pytest.fixture
def run_cli_process() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m reconciler *args`` the way a user does; captured text output."""

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            capture_output=True,
            text=True,
            env=clean_env() if env is None else env,
            cwd=cwd,
            timeout=timeout,
        )

    return run


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A temp copy of the repository's shipped ``models.d/``."""
    target = tmp_path / "models.d"
    shutil.copytree(REPO / "models.d", target)
    return target


class Receiver:
    """A webhook receiver on loopback (Slack's incoming webhook, as far as we care): records
    each JSON body; ``fail_next`` answers that many requests with ``status`` first."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self._fail: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with receiver._lock:
                    receiver.attempts += 1
                    status = receiver._fail.pop(0) if receiver._fail else 200
                    if status == 200:
                        receiver.bodies.append(json.loads(raw))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A path that stands for a webhook's secret token: it must never be logged.
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/T0-secret-path"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [b for b in self.bodies if kind is None or b.get("event") == kind]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()
