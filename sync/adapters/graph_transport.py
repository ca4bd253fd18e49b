"""httpx's transport interface over one aiohttp session: how the Graph client's requests reach the wire.

msgraph-sdk and Kiota speak httpx, and httpx's own transport (httpcore) scans its whole connection pool twice per
request, calling `is_idle` on every connection for every idle one (quadratic in the connections kept alive) and
polling each idle socket through anyio's attribute look-ups. With the 32 connections a worker's concurrent
mailbox syncs keep alive, that bookkeeping cost more CPU than the rest of a Graph request together: in the
bench's small-change cycles httpcore and anyio were a quarter of the sync's CPU. aiohttp, which the Table and
Dataverse clients already use through azure-core, keeps its pool per host and does none of that.

Everything above the transport stays: httpx's client (cookies, default headers, decoding), msgraph-core's
transport and Kiota's middleware (retry, redirect, telemetry), which wrap this one. aiohttp only carries bytes:
no redirects, no decompression (httpx decodes), no cookies (httpx keeps them). Its errors become httpx's, which
callers already handle (`httpx.TransportError`, `TimeoutError`). The proxy comes from the environment once, when
the transport is made, as for the other clients (`transport.proxies_for`). TLS is verified against the system's
trust store, as the azure-core clients do (httpx's transport used certifi's bundle): a TLS-inspecting proxy's root,
installed in the system store, is trusted by all three clients alike.
"""
from __future__ import annotations

import aiohttp
import httpx
from yarl import URL

from .transport import proxies_for

# Most specific first: aiohttp's connect and read timeouts are ServerTimeoutErrors, a proxy refusal is a
# ClientConnectorError.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientError, httpx.NetworkError),
)
# The body is read whole before it is sent (Kiota's are bytes already), so aiohttp sets its length itself.
_NOT_FORWARDED = {"transfer-encoding", "content-length"}


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Requests to one endpoint through an aiohttp session made on first use, in the event loop that uses it."""

    def __init__(self, endpoint: str, *, connections: int):
        proxy = proxies_for(endpoint)
        self._proxy = next(iter(proxy.values())) if proxy else None
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self.connections_opened = 0        # new TCP connections, for the tests and the bench: reuse is the point

    def _session_in_loop(self) -> aiohttp.ClientSession:
        if self._session is None:
            counting = aiohttp.TraceConfig()
            counting.on_connection_create_end.append(self._opened)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections), trust_env=False, auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                trace_configs=[counting])
        return self._session

    async def _opened(self, *_: object) -> None:
        self.connections_opened += 1

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout") or {}
        headers = [(name, value) for name, value in ((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw)
                   if name.lower() not in _NOT_FORWARDED]
        body = await request.aread()
        try:
            async with self._session_in_loop().request(
                    request.method, URL(str(request.url), encoded=True), headers=headers, data=body or None, proxy=self._proxy,
                    allow_redirects=False, timeout=aiohttp.ClientTimeout(total=None, connect=timeout.get("pool"),
                                                                         sock_connect=timeout.get("connect"),
                                                                         sock_read=timeout.get("read"))) as answer:
                content = await answer.read()
        except aiohttp.ClientError as exc:
            httpx_error = next(mine for theirs, mine in _ERRORS if isinstance(exc, theirs))
            raise httpx_error(str(exc) or type(exc).__name__, request=request) from exc
        return httpx.Response(answer.status, headers=list(answer.raw_headers), content=content,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": (answer.reason or "").encode("latin-1", "replace")})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
