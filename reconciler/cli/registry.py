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
    ctx: typer.Context,
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
            help="Bearer key clients must send (visible in ps: prefer MKA1_API_KEY or "
            "--api-key-file); generated and printed once when no key is given.",
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file", help="Read the key from this file (one line); wins over MKA1_API_KEY."
        ),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Larger request bodies answer 413.")
    ] = 1024 * 1024,
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
    import sqlite3

    from pydantic import ValidationError

    from .. import server
    from ..server.keyfile import KeyFileError, read_key_file
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
        immutable = [dict(m.body) for _, m in sorted(loaded.models.items())]
    # By name: Typer may bring its own copy of click's ParameterSource.
    source_of_key = ctx.get_parameter_source("api_key")
    key_on_command_line = source_of_key is not None and source_of_key.name == "COMMANDLINE"
    if api_key_file is not None:
        if key_on_command_line:
            err.print("error: give --api-key or --api-key-file, not both")
            raise typer.Exit(EXIT_ERROR)
        try:
            api_key = read_key_file(api_key_file)
        except KeyFileError as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(EXIT_ERROR) from None
    elif key_on_command_line and api_key:
        err.print(
            "warning: --api-key is visible to other local users (ps); "
            "prefer MKA1_API_KEY or --api-key-file"
        )
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
    try:
        store = server.Store(db_path)
    except (OSError, sqlite3.Error) as exc:
        sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        err.print(f"error: cannot open the database {db_path}: {reason}", markup=False)
        raise typer.Exit(EXIT_ERROR) from None
    try:
        app = server.create_app(
            store,
            key,
            strict_add=strict_add,
            add_defaults=add_defaults,
            faults=faults,
            immutable=immutable,
            max_body_bytes=max_body_bytes,
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
