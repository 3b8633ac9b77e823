"""Prometheus metrics of the daemon, in their own ``CollectorRegistry`` (no process globals).

Every metric is built through :meth:`Metrics._make` and every labelled child through
:meth:`Metrics.of`, so a label common to all series (``environment``) is one change to
:attr:`Metrics.common`; :meth:`Metrics.view` gives each environment the same metrics under its
own value. Counters exist at zero from the start, so an alert on ``increase(...)`` sees a
series before the first event.
"""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import httpx
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
    make_asgi_app,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..events import Event, Kind
from ..registry import USER_AGENT
from .state import UNSYNCED, ModelStatus, State

# ``*_created`` series double every counter and histogram for nothing an alert uses.
disable_created_metrics()

VERSION = USER_AGENT.partition("/")[2]
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
NOTIFY_OUTCOMES = ("sent", "failed", "dropped", "deduplicated")


class Metrics:
    """Every metric the daemon exports; per-model gauges are computed at scrape time."""

    def __init__(self, *, dry_run: bool = False, common: Mapping[str, str] | None = None) -> None:
        self.common: dict[str, str] = dict(common or {})
        self.registry = CollectorRegistry(auto_describe=True)
        self._dry = dry_run
        self.build_info = self._make(
            Info, "reconciler_build", "The reconciler's version and Python's (always 1)."
        )
        self.dry_run = self._make(
            Gauge, "reconciler_dry_run", "1 when the daemon runs with --dry-run (never writes)."
        )
        self.runs = self._make(
            Counter,
            "reconciler_reconcile_runs",
            "Reconcile runs, by kind (full, incremental) and result (ok, error).",
            "kind",
            "result",
        )
        self.duration = self._make(
            Histogram,
            "reconciler_reconcile_duration_seconds",
            "Time one reconcile run took, by kind.",
            "kind",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.writes = self._make(
            Counter,
            "reconciler_writes",
            "Registry writes, by action (create, update, delete) and outcome (ok, error).",
            "action",
            "outcome",
        )
        self.requests = self._make(
            Histogram,
            "reconciler_registry_request_duration_seconds",
            "Registry calls, from request to the end of the answer, by HTTP method and status "
            "(the code, or 'error' when no answer came).",
            "method",
            "status",
            buckets=REQUEST_BUCKETS,
        )
        self.drift_corrected = self._make(
            Counter,
            "reconciler_drift_corrected",
            "Entries changed or deleted in the registry behind our back and put back, by id.",
            "id",
        )
        self.drift_detected = self._make(
            Counter,
            "reconciler_drift_detected",
            "Entries found differing from their file and left as they are (--dry-run), by id.",
            "id",
        )
        self.file_events = self._make(
            Counter, "reconciler_file_events", "Model file changes noticed by the watcher."
        )
        self.health_checks = self._make(
            Counter,
            "reconciler_health_checks",
            "Health checks asked of the registry, by outcome (available, unavailable, error).",
            "outcome",
        )
        self.health_skipped = self._make(
            Counter,
            "reconciler_health_rounds_skipped",
            "Health rounds not run because the registry was down.",
        )
        self.prune_skipped = self._make(
            Counter,
            "reconciler_prune_skipped",
            "Full syncs whose prune was refused, by reason (invalid-files, empty, max-deletes, "
            "paged).",
            "reason",
        )
        self.notifications = self._make(
            Counter,
            "reconciler_notifications",
            "Webhook notifications, by outcome (sent, failed after retries, dropped from a full "
            "queue, deduplicated).",
            "outcome",
        )
        self.last_sync = self._make(
            Gauge,
            "reconciler_last_successful_sync_timestamp_seconds",
            "Unix time of the last full sync that listed the registry and wrote without error.",
        )
        self.ready = self._make(Gauge, "reconciler_ready", "1 when /readyz answers 200.")
        self.registry_up = self._make(
            Gauge, "reconciler_registry_up", "1 when the registry answered the last call."
        )
        self.invalid_files = self._make(
            Gauge, "reconciler_invalid_files", "Model files that failed to load."
        )
        # Where the scrape-time gauges read each view's models, by its common label values.
        self._models: dict[tuple[str, ...], Callable[[], Iterable[ModelStatus]]] = {}
        self.registry.register(_ModelGauges(self))
        self._start()

    def view(self, **common: str) -> Metrics:
        """The same metrics (one registry, one ``/metrics``) under other common label values:
        one environment's."""
        other = copy.copy(self)
        other.common = {**self.common, **common}
        if list(other.common) != list(self.common):
            raise ValueError("a view changes the values of the common labels, not their names")
        other._start()
        return other

    def _start(self) -> None:
        self.of(self.build_info).info({"version": VERSION, "python": platform.python_version()})
        self.of(self.dry_run).set(1 if self._dry else 0)
        self.watch_models(list)
        # Counters at zero, so an alert on increase(...) sees a series before the first event.
        for kind in ("full", "incremental"):
            for result in ("ok", "error"):
                self.of(self.runs, kind=kind, result=result)
            self.of(self.duration, kind=kind)
        for action in ("create", "update", "delete"):
            for outcome in ("ok", "error"):
                self.of(self.writes, action=action, outcome=outcome)
        for outcome in ("available", "unavailable", "error"):
            self.of(self.health_checks, outcome=outcome)
        for reason in ("invalid-files", "empty", "max-deletes", "paged"):
            self.of(self.prune_skipped, reason=reason)
        for outcome in NOTIFY_OUTCOMES:
            self.of(self.notifications, outcome=outcome)

    def _make(self, kind: type[Any], name: str, doc: str, *labels: str, **kwargs: Any) -> Any:
        return kind(name, doc, [*self.common, *labels], registry=self.registry, **kwargs)

    def of(self, metric: Any, **labels: str) -> Any:
        """The child of ``metric`` for ``labels`` plus the common labels."""
        values = {**self.common, **labels}
        return metric.labels(**values) if values else metric

    # --- what the daemon calls ----------------------------------------------------------------

    def watch_models(self, source: Callable[[], Iterable[ModelStatus]]) -> None:
        """Where the scrape-time gauges read the models from."""
        self._models[tuple(self.common.values())] = source

    def model_seen(self, model_id: str) -> None:
        """Start the per-id counters at zero for a model now managed."""
        self.of(self.drift_corrected, id=model_id)

    def observe_request(self, method: str, status: str, seconds: float) -> None:
        self.of(self.requests, method=method, status=status).observe(seconds)

    def emit(self, event: Event) -> None:
        """The metrics sink of the event seam."""
        if event.kind is Kind.DRIFT_CORRECTED and event.id is not None:
            self.of(self.drift_corrected, id=event.id).inc()
        elif event.kind is Kind.DRIFT_DETECTED and event.id is not None:
            self.of(self.drift_detected, id=event.id).inc()

    def count_notification(self, outcome: str) -> None:
        self.of(self.notifications, outcome=outcome).inc()

    def names(self) -> set[str]:
        """Every series name this registry can export (``_total``, ``_bucket``... included)."""
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "info": ("_info",),
        }
        return {
            family.name + suffix
            for family in self.registry.collect()
            for suffix in suffixes.get(family.type, ("",))
        }

    def exposition(self) -> bytes:
        """The text format (what /metrics serves)."""
        return generate_latest(self.registry)

    def asgi_app(self) -> Any:
        """prometheus-client's own ASGI app over this registry (content negotiation, gzip)."""
        return make_asgi_app(registry=self.registry)

    def transport(self, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        """Wrap the registry client's transport: its one seam, where every call is timed."""
        return TimedTransport(inner, self.observe_request)


class _ModelGauges(Collector):
    """``reconciler_models{state}``, ``reconciler_models_out_of_sync`` and
    ``reconciler_model_available{id}``, computed from the models at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[GaugeMetricFamily]:
        names = list(self.metrics.common)
        by_state = GaugeMetricFamily(
            "reconciler_models", "Managed models, by state.", labels=[*names, "state"]
        )
        out = GaugeMetricFamily(
            "reconciler_models_out_of_sync",
            "Models whose registry entry differs from their file: a write pending, failed, or "
            "not made (--dry-run).",
            labels=names,
        )
        available = GaugeMetricFamily(
            "reconciler_model_available",
            "1 when the model's last health check found it available, 0 when not.",
            labels=[*names, "id"],
        )
        for common, models in list(self.metrics._models.items()):
            values = list(common)
            counts = dict.fromkeys(State, 0)
            for m in models():
                counts[m.state] += 1
                if m.available is not None:
                    available.add_metric([*values, m.id], 1 if m.available else 0)
            for state, n in counts.items():
                by_state.add_metric([*values, state.value], n)
            out.add_metric(values, sum(counts[s] for s in UNSYNCED))
        return [by_state, out, available]


class TimedTransport(httpx.AsyncBaseTransport):
    """Times each request until its answer has been read (or failed)."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, observe: Callable[[str, str, float], None]
    ) -> None:
        self.inner = inner
        self.observe = observe

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException:
            self.observe(request.method, "error", time.perf_counter() - start)
            raise
        status = str(response.status_code)
        done = lambda: self.observe(request.method, status, time.perf_counter() - start)  # noqa: E731
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_TimedStream(response.stream, done),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _TimedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, done: Callable[[], None]) -> None:
        self.inner = inner
        self.done: Callable[[], None] | None = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            if self.done is not None:
                self.done()
                self.done = None
