"""The Table store, the Dataverse client and the Graph calendar take their proxy from the environment (HTTP_PROXY, HTTPS_PROXY,
NO_PROXY) once, when they are made, and never look again: aiohttp's own per-request look-up (azure-core's default,
`use_env_settings`) cost two thread hand-offs per request. A recording proxy on loopback shows where requests go."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from sync.adapters.dataverse import DataverseClient
from sync.adapters.graph import GraphCalendar
from sync.adapters.tables import TableState
from sync.adapters.transport import proxies_for
from sync.ports import PermanentError
from tests.loopback import LoopbackServer

pytestmark = pytest.mark.stack
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


class RecordingProxy(LoopbackServer):
    """Answers every request 404, as a proxy relaying a service's 404 would, and keeps the request lines."""

    def __init__(self) -> None:
        super().__init__(self._serve)
        self.request_lines: list[str] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.request_lines.append(head.split(b"\r\n", 1)[0].decode())
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()


@pytest.fixture
def clean_proxy_env(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_proxies_for_follows_the_scheme_and_no_proxy(clean_proxy_env):
    clean_proxy_env.setenv("HTTPS_PROXY", "http://proxy.contoso.example:3128")
    assert proxies_for("https://account.table.core.windows.net") == {"https": "http://proxy.contoso.example:3128"}
    assert proxies_for("http://127.0.0.1:10002/devstoreaccount1") is None          # no HTTP_PROXY
    clean_proxy_env.setenv("NO_PROXY", ".table.core.windows.net")
    assert proxies_for("https://account.table.core.windows.net") is None
    assert proxies_for("https://contoso.crm.dynamics.com") == {"https": "http://proxy.contoso.example:3128"}


async def test_the_table_store_uses_the_proxy_set_when_it_was_made(stack, clean_proxy_env, table_prefix):
    recording, later = RecordingProxy(), RecordingProxy()
    async with recording as proxy_url, later as later_url:
        clean_proxy_env.setenv("HTTP_PROXY", proxy_url)
        store = TableState.from_settings(stack.table_connection_string, None, None, table_prefix)
        clean_proxy_env.setenv("HTTP_PROXY", later_url)                       # read once: a later change is not seen
        try:
            assert await store.mailboxes.get("tech@contoso.example") is None
        finally:
            await store.close()
        clean_proxy_env.setenv("NO_PROXY", "127.0.0.1")
        direct = TableState.from_settings(stack.table_connection_string, None, None, table_prefix)
        try:
            await direct.ensure_tables()                                      # Azurite itself answers
            assert await direct.mailboxes.get("tech@contoso.example") is None
        finally:
            await direct.close()
    (line,) = recording.request_lines
    assert line.startswith(f"GET {stack.table_connection_string.split('TableEndpoint=')[1].split(';')[0].rstrip('/')}/")
    assert table_prefix in line
    assert later.request_lines == []


async def test_a_proxy_set_after_the_store_was_made_is_not_used(stack, clean_proxy_env, table_prefix):
    store = TableState.from_settings(stack.table_connection_string, None, None, table_prefix)
    recording = RecordingProxy()
    try:
        async with recording as proxy_url:
            clean_proxy_env.setenv("HTTP_PROXY", proxy_url)
            await store.ensure_tables()
            assert await store.mailboxes.get("tech@contoso.example") is None
    finally:
        await store.close()
    assert recording.request_lines == []


async def test_the_dataverse_client_uses_the_proxy_set_when_it_was_made(tenant, clean_proxy_env):
    recording, later = RecordingProxy(), RecordingProxy()
    async with recording as proxy_url, later as later_url:
        clean_proxy_env.setenv("HTTP_PROXY", proxy_url)
        client = DataverseClient(tenant.emulator_url, _token())
        clean_proxy_env.setenv("HTTP_PROXY", later_url)
        try:
            with pytest.raises(PermanentError, match="404"):                  # the proxy's own answer
                await client.read_booking(str(uuid.uuid4()))
        finally:
            await client.close()
    assert [line.split(" ")[0] for line in recording.request_lines] == ["GET"]
    assert recording.request_lines[0].split(" ")[1].startswith(tenant.emulator_url + "/api/data/v9.2/")
    assert later.request_lines == []


async def test_the_graph_calendar_uses_the_proxy_set_when_it_was_made(tenant, clean_proxy_env):
    recording, later = RecordingProxy(), RecordingProxy()
    async with recording as proxy_url, later as later_url:
        clean_proxy_env.setenv("HTTP_PROXY", proxy_url)
        calendar = GraphCalendar(tenant.emulator_url + "/v1.0", _token(), max_retries=0)
        clean_proxy_env.setenv("HTTP_PROXY", later_url)
        try:
            probe = await calendar.test_mailbox("tech@contoso.example")
        finally:
            await calendar.close()
    assert not probe.ok and probe.reason == "mailbox_not_found"                  # the proxy's own 404
    assert recording.request_lines[0].startswith(f"GET {tenant.emulator_url}/v1.0/users/tech%40contoso.example/calendar")
    assert later.request_lines == []


def _token():
    from sync.adapters.credentials import LoopbackDevCredential
    return LoopbackDevCredential()
