"""azure-core's aiohttp transport for one fixed endpoint, with the environment's proxy settings read once.

azure-core's default (`use_env_settings=True`) opens its aiohttp session with `trust_env=True`. aiohttp then
looks up HTTP(S)_PROXY, NO_PROXY and ~/.netrc again for every request, each time in a worker thread: two thread
hand-offs per Table or Dataverse request, which the bench measured as a fifth of a small-change cycle's CPU. An
endpoint's proxy cannot change while the process runs, so it is read here once, when the client is made, and
given to azure-core's ProxyPolicy (its documented `proxies` setting). ~/.netrc is not consulted: these services
authenticate with Entra tokens or a shared key, never a netrc password.
"""
from __future__ import annotations

from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

from azure.core.pipeline.transport import AioHttpTransport


def proxies_for(url: str) -> dict[str, str] | None:
    """The proxy the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) sets for `url`, as azure-core's `proxies`."""
    parts = urlsplit(url)
    proxy = getproxies().get(parts.scheme)
    if not proxy or proxy_bypass(parts.hostname or ""):
        return None
    return {parts.scheme: proxy}


def endpoint_transport() -> AioHttpTransport:
    """A transport that leaves the environment alone; pair it with `proxies=proxies_for(endpoint)`."""
    return AioHttpTransport(use_env_settings=False)
