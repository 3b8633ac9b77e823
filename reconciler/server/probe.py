"""Health probing: one real HTTP request to a model's health-check URL (or its ``baseUrl``).

Which URL: a legacy ``healthCheck.url`` as is; ``mode`` preflight/periodic: ``baseUrl`` with the
``path`` appended (not URL-joined, so ``https://h/v1`` + ``/health`` is ``https://h/v1/health``);
``mode: off``: nothing is probed and the model counts as available; no healthCheck: ``baseUrl``.
2xx and 3xx answers are available; anything else, or no answer, is not: ``error`` says why.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

DEFAULT_TIMEOUT = 2.0
MAX_TIMEOUT = 10.0  # the health call waits for the probe; a huge timeoutMs must not hang it
MIN_TIMEOUT = 0.05
_USERINFO = re.compile(r"(//)[^/?#]*@")


@dataclass(frozen=True)
class ProbeTarget:
    url: str
    method: str = "GET"
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class ProbeResult:
    is_available: bool
    error: str | None


def target(
    definition: Mapping[str, Any], timeout: float = DEFAULT_TIMEOUT
) -> ProbeTarget | ProbeResult:
    """Where to probe for this definition, or the outcome when there is nothing to probe."""
    check = definition.get("healthCheck")
    base = definition.get("baseUrl")
    if isinstance(check, Mapping):
        method = str(check.get("method") or "GET")
        if check.get("timeoutMs"):
            timeout = max(MIN_TIMEOUT, min(float(check["timeoutMs"]) / 1000, MAX_TIMEOUT))
        if "url" in check:
            return ProbeTarget(str(check["url"]), method, timeout)
        if check.get("mode") == "off":
            return ProbeResult(True, None)
        if not base:
            return ProbeResult(False, "healthCheck has a path but the model has no baseUrl")
        path = str(check.get("path") or "")
        return ProbeTarget(str(base).rstrip("/") + "/" + path.lstrip("/"), method, timeout)
    if not base:
        return ProbeResult(False, "no healthCheck url and no baseUrl to probe")
    return ProbeTarget(str(base), "GET", timeout)


async def probe(definition: Mapping[str, Any], timeout: float = DEFAULT_TIMEOUT) -> ProbeResult:
    """Probe the model's endpoint once and say whether it answered well."""
    where = target(definition, timeout)
    if isinstance(where, ProbeResult):
        return where
    # trust_env=False: a proxy from the environment must not stand in for the model's endpoint.
    async with httpx.AsyncClient(timeout=where.timeout, trust_env=False) as client:
        # The status line is the answer: the body is never read (an endless one costs nothing),
        # and the whole exchange has one deadline (httpx's timeout is per read, so an endpoint
        # dripping a byte a second would hold the health call forever).
        with anyio.move_on_after(where.timeout) as waited:
            try:
                async with client.stream(where.method, where.url) as response:
                    status, reason = response.status_code, response.reason_phrase
            except httpx.TimeoutException:
                return ProbeResult(False, f"timed out after {where.timeout:g} s")
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                # ValueError: idna's for a host like "xn--zz"; a probe fails, it never crashes.
                return ProbeResult(False, _describe(exc, where.url))
        if waited.cancelled_caught:
            return ProbeResult(False, f"timed out after {where.timeout:g} s")
    if 200 <= status < 400:
        return ProbeResult(True, None)
    return ProbeResult(False, f"HTTP {status} {reason}".strip())


def without_userinfo(url: str) -> str:
    """``url`` without its ``user:password@`` part: a credential in a URL is not shown."""
    return _USERINFO.sub(r"\1", url, count=1)


def _describe(exc: Exception, url: str) -> str:
    """An operator's words for a failed probe, not an exception class name; never user-info."""
    host = without_userinfo(url)
    with contextlib.suppress(httpx.InvalidURL, ValueError):
        host = httpx.URL(url).netloc.decode()  # host[:port], never user-info
    text = without_userinfo(str(exc).replace(url, without_userinfo(url)))
    if isinstance(exc, httpx.ConnectError):
        if "Name or service not known" in text or "nodename nor servname" in text:
            return f"cannot resolve host {host}"
        if "Connection refused" in text or "All connection attempts failed" in text:
            return f"cannot connect to {host}: connection refused"
        return f"cannot connect to {host}: {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
