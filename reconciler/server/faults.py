"""Misbehaviour on purpose: the fault settings, the request counters, and the decisions they drive.

All faults are off by default. They are set by ``registry serve`` flags and changed at run time
through ``POST /_control``; the reconciler's retry tests and benchmarks rely on them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Call = Literal["list", "get", "add", "update", "remove", "health"]
CALLS: tuple[Call, ...] = ("list", "get", "add", "update", "remove", "health")
WRITES: frozenset[str] = frozenset({"add", "update", "remove"})


class Faults(BaseModel):
    """Fault knobs. ``*_next_*`` counters are consumed one per matching request."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    latency_ms: float = Field(0, ge=0, le=60_000, description="added to every API call")
    fail_writes: float = Field(0, ge=0, le=1, description="share of writes answering 503")
    fail_next_writes: int = Field(0, ge=0, description="the next N writes answer 503")
    rate_limit_next: int = Field(0, ge=0, description="the next N calls answer 429")
    retry_after: int = Field(1, ge=0, le=3600, description="Retry-After seconds sent with 429")
    drop_next_writes: int = Field(0, ge=0, description="store, then drop the connection")


class ServerOptions(BaseModel):
    """Behaviour switches that real gateways differ on."""

    model_config = ConfigDict(extra="forbid")

    strict_add: bool = False
    add_defaults: bool = False


Verdict = Literal["ok", "rate_limit", "fail", "drop"]


@dataclass
class Control:
    """The mutable run-time state behind ``/_control``: faults, options and counters."""

    faults: Faults = field(default_factory=Faults)
    options: ServerOptions = field(default_factory=ServerOptions)
    counts: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.reset_counts()

    def reset_counts(self) -> None:
        """Zero every counter."""
        self.counts = {call: 0 for call in (*CALLS, "writes")}

    def state(self) -> dict[str, Any]:
        """The JSON answer of ``GET /_control``."""
        return {
            "faults": self.faults.model_dump(),
            "options": self.options.model_dump(),
            "counts": dict(self.counts),
        }

    def update(self, body: Mapping[str, Any]) -> None:
        """Apply a ``POST /_control`` body: flat keys of faults and options, plus reset_counts.

        Raises pydantic's ValidationError (or ValueError for unknown keys); nothing changes then.
        """
        body = dict(body)
        reset = body.pop("reset_counts", False)
        if not isinstance(reset, bool):
            raise ValueError("reset_counts must be true or false")
        fault_keys, option_keys = set(Faults.model_fields), set(ServerOptions.model_fields)
        unknown = sorted(set(body) - fault_keys - option_keys)
        if unknown:
            known = ", ".join(sorted(fault_keys | option_keys | {"reset_counts"}))
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {known}")
        faults = Faults.model_validate(
            {**self.faults.model_dump(), **{k: v for k, v in body.items() if k in fault_keys}}
        )
        options = ServerOptions.model_validate(
            {**self.options.model_dump(), **{k: v for k, v in body.items() if k in option_keys}}
        )
        self.faults, self.options = faults, options
        if reset:
            self.reset_counts()

    def admit(self, call: Call) -> Verdict:
        """Count one API call and decide its fate before it runs."""
        self.counts[call] += 1
        is_write = call in WRITES
        if is_write:
            self.counts["writes"] += 1
        f = self.faults
        if f.rate_limit_next > 0:
            f.rate_limit_next -= 1
            return "rate_limit"
        if not is_write:
            return "ok"
        if f.fail_next_writes > 0:
            f.fail_next_writes -= 1
            return "fail"
        if f.fail_writes > 0 and self.rng.random() < f.fail_writes:
            return "fail"
        if f.drop_next_writes > 0:
            # Consumed by take_drop() only once a write succeeds: a refused write stores nothing.
            return "drop"
        return "ok"

    def take_drop(self) -> bool:
        """Use up one ``drop_next_writes``, if any is left."""
        if self.faults.drop_next_writes > 0:
            self.faults.drop_next_writes -= 1
            return True
        return False
