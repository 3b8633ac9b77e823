"""Property: whatever body a key holder sends to a write or to ``/_control``, the local registry
answers it (2xx or 4xx, never 5xx, never an exception) and keeps answering afterwards."""

from __future__ import annotations

import json

import anyio
import httpx
from helpers import API, item, minimal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.server import Store, create_app

KEY = "fuzz-key"
TARGETS = [("POST", API), ("PATCH", item("meetkai:min")), ("POST", "/_control")]

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
# Near-valid definitions reach deeper than random JSON: a valid body with some keys replaced.
fields = st.sampled_from([*minimal(), "healthCheck", "baseUrl", "rateLimits", "id", "x"])
near_valid = st.dictionaries(fields, json_values, max_size=3).map(lambda d: {**minimal(), **d})
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_valid.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
)


NO_FAULTS = {
    "latency_ms": 0,
    "fail_writes": 0,
    "fail_next_writes": 0,
    "rate_limit_next": 0,
    "drop_next_writes": 0,
}


def test_any_body_gets_a_4xx_or_2xx_answer() -> None:
    store = Store(":memory:")
    app = create_app(store, KEY, max_body_bytes=8192)

    async def send(method: str, path: str, body: bytes) -> tuple[int, int]:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://registry", headers=headers
        ) as client:
            with anyio.fail_after(10):
                await client.post(API, json=minimal())  # PATCH has an entry to change
                status = (await client.request(method, path, content=body)).status_code
                # A /_control body may have set faults (503s on purpose): clear them first.
                app.state.control.update(NO_FAULTS)
                listed = (await client.get(API)).status_code
        return status, listed

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(target=st.sampled_from(TARGETS), body=bodies)
    def check(target: tuple[str, str], body: bytes) -> None:
        status, listed = anyio.run(send, *target, body)
        assert status < 500, (target, body[:200])
        assert listed == 200

    try:
        check()
    finally:
        store.close()
