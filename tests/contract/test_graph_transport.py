"""The Graph client's transport (httpx over aiohttp) against loopback servers: the request goes out as httpx built
it, the answer comes back as httpx would have read it, and every failure is one of httpx's TransportErrors, which
the Graph calendar classifies (a transient error, a dropped write recovered by its tag)."""
from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import pytest

from sync.adapters.graph_transport import AiohttpTransport
from tests.loopback import LoopbackServer


async def _read_request(reader: asyncio.StreamReader) -> tuple[list[str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[:-2]
    length = next((int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:")), 0)
    return head, await reader.readexactly(length)


async def _echo_gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            head, body = await _read_request(reader)
        except asyncio.IncompleteReadError:
            break
        answer = gzip.compress(json.dumps({"head": head, "body": body.decode()}).encode())
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nSet-Cookie: a=1\r\n"
                     + f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer)
        await writer.drain()
    writer.close()


async def test_a_request_goes_out_as_httpx_built_it_and_its_answer_comes_back_decoded():
    async with LoopbackServer(_echo_gzipped) as url:
        transport = AiohttpTransport(url, connections=4)
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            answers = [await client.post(f"{url}/v1.0/users/tech%40contoso.example/events?$filter=a%20eq%20'b%2Fc'",
                                         json={"subject": "ü"}, headers={"X-Test": "1"}) for _ in range(3)]
        await transport.aclose()
    first = answers[0]
    assert first.status_code == 201 and first.reason_phrase == "Created"
    echoed = first.json()                                               # gzip decoded by httpx, once
    request_line, *headers = echoed["head"]
    assert request_line == "POST /v1.0/users/tech%40contoso.example/events?$filter=a%20eq%20'b%2Fc' HTTP/1.1"   # not re-quoted
    names = [h.split(":", 1)[0].lower() for h in headers]
    assert len(names) == len(set(names))                                # nothing sent twice
    sent = dict(h.split(": ", 1) for h in headers)
    assert sent["X-Test"] == "1" and sent["Content-Type"] == "application/json"
    assert int(sent["Content-Length"]) == len(echoed["body"].encode()) and json.loads(echoed["body"]) == {"subject": "ü"}
    assert sent["User-Agent"].startswith("python-httpx/")              # httpx's own headers, not aiohttp's
    assert "Cookie: a=1" in answers[1].json()["head"]                   # httpx keeps the cookies, aiohttp adds none
    assert transport.connections_opened == 1                            # the three requests shared one kept-alive connection


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.close()


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    await asyncio.sleep(5)
    writer.close()


async def _send(url: str, timeout: float = 5.0) -> httpx.Response:
    transport = AiohttpTransport(url, connections=4)
    try:
        async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=timeout) as client:
            return await client.post(f"{url}/v1.0/$batch", json={"requests": []})
    finally:
        await transport.aclose()


async def test_a_connection_cut_before_the_answer_is_a_transport_error():
    async with LoopbackServer(_hang_up) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            await _send(url)


async def test_a_refused_connection_is_a_connect_error():
    async with LoopbackServer(_hang_up) as url:
        pass                                                            # closed: nothing listens on the port now
    with pytest.raises(httpx.ConnectError):
        await _send(url)


async def test_an_answer_slower_than_the_read_timeout_is_a_read_timeout():
    async with LoopbackServer(_never_answer) as url:
        with pytest.raises(httpx.ReadTimeout):
            await _send(url, timeout=0.3)
