"""Sharded connection pools (reconciler.registry.transport): the split, the routing, the release,
and make_client against a real registry with more calls in flight than one pool holds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from reconciler import reconcile
from reconciler.registry.transport import SHARD_SIZE, ShardedTransport, shard_sizes


@pytest.mark.parametrize(
    ("connections", "sizes"),
    [(1, [1]), (4, [4]), (5, [3, 2]), (16, [4, 4, 4, 4]), (0, [1]), (10, [4, 3, 3])],
)
def test_shard_sizes(connections: int, sizes: list[int]) -> None:
    assert shard_sizes(connections, 4) == sizes
    assert all(n <= SHARD_SIZE for n in shard_sizes(64))
    assert sum(shard_sizes(64)) == 64


class Gate:
    """Shards that hold every answer until released, recording which shard got each request."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.open = anyio.Event()

    def make(self, size: int) -> httpx.AsyncBaseTransport:
        index = len(self.sizes) if hasattr(self, "sizes") else 0
        self.sizes = [*getattr(self, "sizes", []), size]

        async def handler(request: httpx.Request) -> httpx.Response:
            self.seen.append(index)
            await self.open.wait()

            async def body() -> AsyncIterator[bytes]:  # streamed, as a real pool's answer is
                yield b'{"shard": %d}' % index

            return httpx.Response(200, content=body())

        return httpx.MockTransport(handler)


def test_requests_spread_over_the_least_busy_pools_and_release_on_close() -> None:
    gate = Gate()
    transport = ShardedTransport(gate.make, 12, size=4)
    assert transport.shards == 3 and gate.sizes == [4, 4, 4]

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            answers: list[int] = []

            async def call() -> None:
                answers.append((await client.get("/")).json()["shard"])

            async with anyio.create_task_group() as group:
                for _ in range(9):
                    group.start_soon(call)
                with anyio.fail_after(5):
                    while len(gate.seen) < 9:
                        await anyio.sleep(0.001)
                gate.open.set()
            # Every response read and closed: every pool is idle again.
            assert transport._busy == [0, 0, 0]
            return answers

    answers = anyio.run(main)
    assert sorted(gate.seen) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert sorted(answers) == sorted(gate.seen)


def test_a_failed_request_releases_its_pool() -> None:
    def make(size: int) -> httpx.AsyncBaseTransport:
        def fail(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        return httpx.MockTransport(fail)

    transport = ShardedTransport(make, 8, size=4)

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                with pytest.raises(httpx.ConnectError):
                    await client.get("http://x/")

    anyio.run(main)
    assert transport._busy == [0, 0]


def test_make_client_syncs_through_sharded_pools(registry: object) -> None:
    # 40 calls at once through pools of 4 against the real local registry: all answered.
    target = reconcile.Target(registry.url, registry.api_key)  # type: ignore[attr-defined]
    client = reconcile.make_client(target, concurrency=40)

    async def main() -> int:
        async with client:
            async with anyio.create_task_group() as group:
                for _ in range(40):
                    group.start_soon(client.list)
            return len(await client.list())

    assert anyio.run(main) == 0
