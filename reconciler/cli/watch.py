"""``reconciler watch``: the daemon (sync at start, on file changes and on a timer)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .. import defaults
from .common import (
    ConcurrencyOpt,
    ConfigOpt,
    DirOpt,
    ForceOpt,
    MaxDeletesOpt,
    OnBehalfOfOpt,
    OwnsOpt,
    PruneOpt,
    RegistryUrlOpt,
    RpsOpt,
    TimeoutOpt,
    UpdateMethod,
    UpdateMethodOpt,
    console,
    fail,
    load_file_config,
    load_settings,
)
from .environments import AllEnvsOpt, EnvOpt
from .environments import resolve as resolve_envs
from .environments import wanted as environments_wanted


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def watch(
    directory: DirOpt = Path(defaults.DIRECTORY),
    registry_url: RegistryUrlOpt = None,
    on_behalf_of: OnBehalfOfOpt = None,
    config: ConfigOpt = None,
    prune: PruneOpt = False,
    owns: OwnsOpt = None,
    max_deletes: MaxDeletesOpt = None,
    force: ForceOpt = False,
    concurrency: ConcurrencyOpt = defaults.CONCURRENCY,
    rps: RpsOpt = None,
    timeout: TimeoutOpt = defaults.TIMEOUT,
    update_method: UpdateMethodOpt = UpdateMethod.ADD,
    resync_interval: Annotated[
        float,
        typer.Option("--resync-interval", min=0.1, help="Seconds between full resyncs (jittered)."),
    ] = defaults.RESYNC_INTERVAL,
    health_interval: Annotated[
        float,
        typer.Option(
            "--health-interval", min=0, help="Seconds between health rounds; 0 turns them off."
        ),
    ] = defaults.HEALTH_INTERVAL,
    health_concurrency: Annotated[
        int, typer.Option("--health-concurrency", min=1, help="Health checks in flight at once.")
    ] = defaults.HEALTH_CONCURRENCY,
    prune_grace: Annotated[
        float,
        typer.Option(
            "--prune-grace", min=0, help="Seconds a file must stay away before its model goes."
        ),
    ] = defaults.PRUNE_GRACE,
    listen: Annotated[
        str,
        typer.Option("--listen", help="HOST:PORT for /healthz, /readyz, /metrics, /status."),
    ] = defaults.LISTEN,
    log_format: Annotated[LogFormat, typer.Option("--log-format")] = LogFormat.TEXT,
    shutdown_timeout: Annotated[
        float,
        typer.Option(
            "--shutdown-timeout", min=0, help="Seconds to finish writes in flight on SIGTERM."
        ),
    ] = defaults.GRACE,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Plan and report (logs, metrics, status, drift-detected) only."
        ),
    ] = False,
    notify: Annotated[
        list[str] | None,
        typer.Option("--notify", help="POST each event as JSON to this URL (repeatable)."),
    ] = None,
    env: EnvOpt = None,
    all_envs: AllEnvsOpt = False,
) -> None:
    """Run as a daemon: sync at start, on every file change and on a timer; serve status.
    With --env/--all-envs, every selected environment of reconciler.toml at once."""
    from .. import daemon, reconcile
    from ..config import check_webhook_url
    from ..daemon.state import parse_listen
    from ..server.run import bind

    err = console(stderr=True)
    file_config = load_file_config(err, config)
    envs = []
    if environments_wanted(file_config, env, all_envs):
        envs = resolve_envs(
            err,
            file_config,
            env,
            all_envs,
            registry_url=registry_url,
            on_behalf_of=on_behalf_of,
            prune=prune,
            owns=owns or (),
            max_deletes=max_deletes,
            force=force,
        )
    settings = load_settings(err)
    try:
        prune_opts = target = None
        if not envs:
            prune_opts = reconcile.prune_options(
                prune,
                owns or (),
                file_config,
                max_deletes=defaults.MAX_DELETES if max_deletes is None else max_deletes,
                force=force,
            )
            target = reconcile.resolve_target(
                settings, file_config, registry_url=registry_url, on_behalf_of=on_behalf_of
            )
        host, port = parse_listen(listen)
        for url in notify or ():
            try:
                check_webhook_url(url)
            except ValueError as exc:
                raise ValueError(f"--notify: {exc}") from None
    except (reconcile.SetupError, ValueError) as exc:
        fail(err, str(exc))
    webhooks = [daemon.Webhook(url) for url in notify or ()] + [
        daemon.Webhook(n.url, frozenset(n.events)) for n in file_config.notify
    ]
    try:
        sock = bind(host, port)
    except OSError as exc:
        fail(err, f"cannot listen on {listen}: {exc.strerror or exc}")
    options = daemon.Options(
        directory=directory,
        prune=prune_opts,
        ignore=file_config.ignore_rules(),
        resync_interval=resync_interval,
        health_interval=health_interval,
        prune_grace=prune_grace,
        concurrency=concurrency,
        health_concurrency=health_concurrency,
        update_method=update_method.value,
        shutdown_timeout=shutdown_timeout,
        load_policy=reconcile.load_policy(file_config),
        dry_run=dry_run,
        notify=tuple(webhooks),
    )
    try:
        code = daemon.run(
            options,
            target,
            listen=sock,
            log_format=log_format.value,
            timeout=timeout,
            rps=rps,
            envs=envs,
        )
    finally:
        sock.close()
    raise typer.Exit(code)
