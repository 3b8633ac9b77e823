"""Connection pools for many calls in flight: several small httpcore pools side by side.

httpcore's pool walks all its connections and queued requests on every request and every
release, and hands a newly idle HTTP/1.1 connection to every waiting request, all but one of
which wake, fail and queue again (encode/httpcore#1035, open upstream): the work per request
grows with the pool, and a sync at concurrency 32 ran slower than at 16. Pools of at most
:data:`SHARD_SIZE` connections keep that work small; each request goes to the least busy pool,
and a pool counts as busy until its response is closed (the connection is free only then).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx

SHARD_SIZE = 4  # connections per pool: httpcore walks them all on every request and release


def shard_sizes(connections: int, size: int = SHARD_SIZE) -> list[int]:
    """``connections`` split into as few pools of at most ``size`` as possible, evenly."""
    connections = max(connections, 1)
    count = -(-connections // size)
    base, extra = divmod(connections, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


class _Released(httpx.AsyncByteStream):
    """A response body that tells its pool's counter when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._release is not None:
                self._release()
                self._release = None


class ShardedTransport(httpx.AsyncBaseTransport):
    """``connections`` spread over pools of at most :data:`SHARD_SIZE`, built by ``make``
    (given a pool's size); each request goes to the pool with the fewest in flight."""

    def __init__(
        self,
        make: Callable[[int], httpx.AsyncBaseTransport],
        connections: int,
        size: int = SHARD_SIZE,
    ) -> None:
        self._shards = [make(n) for n in shard_sizes(connections, size)]
        self._busy = [0] * len(self._shards)

    @property
    def shards(self) -> int:
        return len(self._shards)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        busy = self._busy
        i = busy.index(min(busy))
        busy[i] += 1

        def release() -> None:
            busy[i] -= 1

        try:
            response = await self._shards[i].handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Released(response.stream, release)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()
