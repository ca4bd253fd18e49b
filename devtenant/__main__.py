"""Run the emulator: `python -m devtenant [--host 127.0.0.1] [--port 0] [--demo]`.

Prints one line `devtenant listening on http://HOST:PORT` once it accepts connections, so a launcher can
read the port when it asked for port 0.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys

from aiohttp import web

from .app import build_app

REQUEST_LINE_LIMIT = 70_000


def loopback(host: str) -> str:
    try:
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"--host must be a loopback address (the emulator has no authentication): {host}")


async def serve(host: str, port: int, app: web.Application | None = None, name: str = "devtenant") -> None:
    """Serves `app` (the emulator's by default) until SIGINT or SIGTERM; prints `NAME listening on URL` once it
    accepts connections."""
    # aiohttp refuses request lines over 8,190 bytes by default; the services emulated accept longer URLs (Dataverse
    # up to 32 KB) and answer for themselves past their limits.
    runner = web.AppRunner(app if app is not None else build_app(), access_log=None, max_line_size=REQUEST_LINE_LIMIT)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    print(f"{name} listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtenant", description=__doc__)
    parser.add_argument("--host", type=loopback, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
