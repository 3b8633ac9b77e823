"""Prometheus metrics of the daemon, in their own ``CollectorRegistry`` (no process globals)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .state import ModelStatus, State


class Metrics:
    """Every metric the daemon exports; gauges derived from model status are set at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "reconciler_reconcile_runs",
            "Reconcile runs, by kind (full, incremental) and result (ok, error).",
            ["kind", "result"],
            registry=r,
        )
        self.duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "Time one reconcile run took, by kind.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.writes = Counter(
            "reconciler_writes",
            "Registry writes, by action (create, update, delete) and outcome (ok, error).",
            ["action", "outcome"],
            registry=r,
        )
        self.file_events = Counter(
            "reconciler_file_events", "Model file changes noticed by the watcher.", registry=r
        )
        self.health_checks = Counter(
            "reconciler_health_checks",
            "Health checks asked of the registry, by outcome (available, unavailable, error).",
            ["outcome"],
            registry=r,
        )
        self.models = Gauge("reconciler_models", "Managed models, by state.", ["state"], registry=r)
        self.available = Gauge(
            "reconciler_model_available",
            "1 when the model's last health check found it available, 0 when not.",
            ["id"],
            registry=r,
        )
        self.last_sync = Gauge(
            "reconciler_last_successful_sync_timestamp_seconds",
            "Unix time of the last full sync that listed the registry and wrote without error.",
            registry=r,
        )
        self.ready = Gauge("reconciler_ready", "1 when /readyz answers 200.", registry=r)
        self.registry_up = Gauge(
            "reconciler_registry_up", "1 when the registry answered the last call.", registry=r
        )
        self.invalid_files = Gauge(
            "reconciler_invalid_files", "Model files that failed to load.", registry=r
        )

    def exposition(self, models: Iterable[ModelStatus]) -> bytes:
        """The text format, after bringing the per-model gauges up to date."""
        counts = dict.fromkeys(State, 0)
        self.available.clear()
        for m in models:
            counts[m.state] += 1
            if m.available is not None:
                self.available.labels(id=m.id).set(1 if m.available else 0)
        for state, n in counts.items():
            self.models.labels(state=state.value).set(n)
        return generate_latest(self.registry)
