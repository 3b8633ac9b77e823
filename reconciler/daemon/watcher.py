"""The watcher: feed file changes to the daemon; survive the directory being deleted,
recreated or swapped under a symlink (git-sync) and ConfigMap ``..data`` swaps."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from watchfiles import awatch

from ..clock import wait_event
from .logs import event

if TYPE_CHECKING:
    from .core import Daemon
    from .fleet import Fleet

# Kubernetes swaps a ConfigMap volume's content by renaming this symlink: one event, all files.
CONFIGMAP_DATA = "..data"


async def watch(daemon: Daemon | Fleet) -> None:
    """Watch until the daemon (or every daemon of a fleet) stops, by watching again and asking
    for a rescan whenever the directory comes back or is replaced."""
    root = daemon.root
    was_missing = False

    def accept(change: object, path: str) -> bool:
        return daemon.filter(change, path) or os.path.basename(path) == CONFIGMAP_DATA

    while not daemon.stopping:
        if not root.is_dir():
            if not was_missing:
                daemon.directory_missing()
                was_missing = True
            await wait_event(daemon.clock, daemon.stop_requested, 0.25)
            continue
        if was_missing:
            event(daemon.log, "directory back", dir=str(root))
            was_missing = False
            daemon.request_full("directory recreated")
        real = os.path.realpath(root)
        try:
            async for changes in awatch(
                root,
                watch_filter=accept,
                debounce=daemon.options.debounce_ms,
                step=daemon.options.step_ms,
                rust_timeout=500,
                yield_on_timeout=True,
                stop_event=daemon.stop_requested,
                recursive=True,
            ):
                paths, swapped = sort_out(changes, str(root), real)
                if swapped:
                    daemon.request_full("configmap update")
                if paths:
                    daemon.notice(paths)
                if not root.is_dir():
                    break
                if os.path.realpath(root) != real:
                    event(daemon.log, "directory replaced", dir=str(root))
                    daemon.request_full("directory replaced")
                    break
        except (OSError, RuntimeError) as exc:
            event(daemon.log, "watch error", logging.WARNING, error=str(exc))
            await wait_event(daemon.clock, daemon.stop_requested, 0.5)


def sort_out(changes: Iterable[tuple[object, str]], root: str, real: str) -> tuple[set[str], bool]:
    """A batch of changes as the model paths it touches (named as :func:`key` names them), and
    whether it swapped a ConfigMap's ``..data`` (every file changed at once)."""
    paths: set[str] = set()
    swapped = False
    for _, path in changes:
        if os.path.basename(path) == CONFIGMAP_DATA:
            swapped = True
        else:
            # A save by delete and rename is two changes of one path: one path, not a swap.
            paths.add(key(root, path, real))
    return paths, swapped


def key(root: str, path: str, real: str) -> str:
    """The path as :func:`discover` names it (under ``root`` as given, not as resolved)."""
    if real != root and (path == real or path.startswith(real + os.sep)):
        return root + path[len(real) :]
    return path
