"""``reconciler registry serve``: the local registry server, kept in SQLite."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import source
from .common import EXIT_ERROR, console

registry_app = typer.Typer(help="The local registry server.", no_args_is_help=True)


def _default_db() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "reconciler" / "registry.db"


@registry_app.command("serve")
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port; 0 picks a free one.")
    ] = 8089,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="SQLite file (':memory:' keeps nothing) "
            "[default: $XDG_STATE_HOME/reconciler/registry.db]",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="MKA1_API_KEY",
            show_default=False,
            help="Bearer key clients must send; generated and printed once when not given.",
        ),
    ] = None,
    immutable_from: Annotated[
        Path | None,
        typer.Option(
            "--immutable-from", help="Serve these model files as read-only YAML-sourced entries."
        ),
    ] = None,
    strict_add: Annotated[
        bool, typer.Option("--strict-add", help="Answer 409 to add over an entry.")
    ] = False,
    add_defaults: Annotated[
        bool,
        typer.Option(
            "--add-defaults", help="Store defaults and a future key the client never sent."
        ),
    ] = False,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", help="Fault: added to every API call.")
    ] = 0,
    fail_writes: Annotated[
        float, typer.Option("--fail-writes", help="Fault: share of writes -> 503.")
    ] = 0,
    fail_next_writes: Annotated[
        int, typer.Option("--fail-next-writes", help="Fault: next N -> 503.")
    ] = 0,
    rate_limit_next: Annotated[
        int, typer.Option("--rate-limit-next", help="Fault: next N calls -> 429.")
    ] = 0,
    retry_after: Annotated[
        int, typer.Option("--retry-after", help="Retry-After seconds sent with 429.")
    ] = 1,
    drop_next_writes: Annotated[
        int,
        typer.Option(
            "--drop-next-writes", help="Fault: store the next N writes, then drop the connection."
        ),
    ] = 0,
) -> None:
    """Run a local registry that speaks the registry API, kept in SQLite. Stop with Ctrl-C."""
    import logging
    import secrets

    from pydantic import ValidationError

    from .. import server
    from ..server.run import bind
    from ..server.run import serve as serve_app

    err = console(stderr=True)
    try:
        faults = server.Faults(
            latency_ms=latency_ms,
            fail_writes=fail_writes,
            fail_next_writes=fail_next_writes,
            rate_limit_next=rate_limit_next,
            retry_after=retry_after,
            drop_next_writes=drop_next_writes,
        )
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            err.print(f"error: --{str(e['loc'][0]).replace('_', '-')}: {e['msg']}")
        raise typer.Exit(EXIT_ERROR) from None
    immutable: list[dict[str, object]] = []
    if immutable_from is not None:
        loaded = source.load_dir(immutable_from)
        if not loaded.ok:
            for p in loaded.errors:
                err.print(f"error: {p}", markup=False)
            raise typer.Exit(EXIT_ERROR)
        immutable = [m.definition.to_api() for _, m in sorted(loaded.models.items())]
    generated = not api_key
    key = api_key or secrets.token_urlsafe(24)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    db_path = db or str(_default_db())
    try:
        sock = bind(host, port)
    except OSError as exc:
        err.print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", markup=False)
        raise typer.Exit(EXIT_ERROR) from None
    store = server.Store(db_path)
    try:
        app = server.create_app(
            store,
            key,
            strict_add=strict_add,
            add_defaults=add_defaults,
            faults=faults,
            immutable=immutable,
        )

        def announce(url: str) -> None:
            if generated:
                # The one time a secret is printed: nobody could use the server otherwise.
                print(f"registry API key (generated, shown only now): {key}", file=sys.stderr)
            print(
                f"db {db_path}: {store.count()} entries, {len(immutable)} immutable",
                file=sys.stderr,
            )
            print(f"registry listening on {url}", file=sys.stderr, flush=True)

        serve_app(app, sock, announce)
    finally:
        store.close()
        sock.close()
    print("registry stopped", file=sys.stderr)
