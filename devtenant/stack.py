"""Start the local stack (Azurite Table Storage + the tenant emulator) on free loopback ports, run
something against it, and always stop what was started, on success, failure, Ctrl-C or SIGTERM.

    python -m devtenant.stack [--demo] [--print-env] -- COMMAND [ARGS...]

COMMAND runs with the stack's settings in its environment (see `LocalStack.environment`). Tests use
`LocalStack` directly from tests/conftest.py.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .demo import PARTNER_DOMAIN, PARTNER_TENANT, partner_settings

ROOT = Path(__file__).resolve().parents[1]
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if the launcher dies without cleaning up (kill -9, OOM).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ManagedProcess:
    def __init__(self, name: str, argv: list[str], ready_text: str, timeout: float = 30.0, cwd: Path = ROOT):
        self.name, self.argv, self.ready_text, self.timeout, self.cwd = name, argv, ready_text, timeout, cwd
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.ready_line = ""

    def start(self) -> ManagedProcess:
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + self.timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if self.ready_text in line:
                self.ready_line = line.strip()
                self._drain()
                return self
        self.stop()
        raise RuntimeError(f"{self.name} did not start within {self.timeout:.0f}s: {' '.join(self.argv)}\n{''.join(seen[-20:])}")

    def _drain(self) -> None:
        import threading

        def pump() -> None:
            for line in self.proc.stdout:
                self.log.write(line.encode())
                self.log.flush()

        threading.Thread(target=pump, daemon=True, name=f"{self.name}-log").start()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


TABLE_SERVERS = ("azurite", "tablestore")


class LocalStack:
    """Table Storage and the emulator, each on a free loopback port. Table Storage is Azurite (pinned in
    package.json); `tables="tablestore"` gives the light double the benchmarks measure the sync against
    (devtenant/tablestore.py)."""

    def __init__(self, tables: str = "azurite") -> None:
        if tables not in TABLE_SERVERS:
            raise ValueError(f"tables must be one of {', '.join(TABLE_SERVERS)}, not {tables!r}")
        self.tables_kind = tables
        self.tables: ManagedProcess | None = None
        self.emulator: ManagedProcess | None = None
        self.table_port = 0
        self.emulator_url = ""

    def _start_tables(self) -> ManagedProcess:
        if self.tables_kind == "tablestore":
            return ManagedProcess("tablestore", [sys.executable, "-m", "devtenant.tablestore", "--host", "127.0.0.1", "--port", "0"],
                                  "tablestore listening on").start()
        azurite_bin = ROOT / "node_modules" / ".bin" / "azurite-table"
        if not azurite_bin.exists():
            raise RuntimeError(f"Azurite is not installed at {azurite_bin}; run `npm ci` (the Makefile does).")
        self.table_port = free_port()
        return ManagedProcess("azurite", [str(azurite_bin), "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
                                          "--skipApiVersionCheck", "--disableTelemetry", "--inMemoryPersistence", "--silent"],
                              "successfully started").start()

    def start(self) -> LocalStack:
        try:
            self.tables = self._start_tables()
            if self.tables_kind == "tablestore":
                self.table_port = int(self.tables.ready_line.rsplit(":", 1)[-1])
            wait_for_port(self.table_port)
            self.emulator = ManagedProcess("devtenant", [sys.executable, "-m", "devtenant", "--host", "127.0.0.1", "--port", "0"],
                                           "devtenant listening on").start()
            self.emulator_url = self.emulator.ready_line.rsplit(" ", 1)[-1]
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in (self.emulator, self.tables):
            if proc is not None:
                proc.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def table_connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
                f"TableEndpoint=http://127.0.0.1:{self.table_port}/devstoreaccount1;")

    def environment(self) -> dict[str, str]:
        """The app settings that point the product at this stack (same names as local.settings.sample.json)."""
        return {
            "STATE_STORAGE_CONNECTION_STRING": self.table_connection_string,
            "DATAVERSE_ENVIRONMENTS": f"{self.emulator_url}/orgs/default",
            "GRAPH_BASE_URL": f"{self.emulator_url}/v1.0",
            "SYNC_CREDENTIAL": "loopback-dev",
            "DEVTENANT_URL": self.emulator_url,
        }

    def control(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.emulator_url}/_control{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtenant.stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="load the demo organisation before running COMMAND")
    parser.add_argument("--print-env", action="store_true", help="print the stack's settings")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    with LocalStack() as stack:
        settings = {**stack.environment(), **(partner_settings() if args.demo else {})}
        env = {**os.environ, **settings}
        print(f"local stack: Azurite tables on 127.0.0.1:{stack.table_port}, emulator at {stack.emulator_url}", flush=True)
        if args.demo:
            # Five of the 25 technicians are a subcontractor's, with mailboxes in the subcontractor's own tenant.
            summary = stack.control("POST", "/demo", {"partner": {"tenant": PARTNER_TENANT, "domain": PARTNER_DOMAIN, "technicians": 5}})
            counts = summary["counts"]
            print(f"demo organisation loaded: {counts['bookableresourcebookings']} bookings, "
                  f"{len(summary['mailboxes'])} mailboxes in Exchange, {len(summary['edge_cases']['partner_mailboxes'])} of them "
                  f"in a second tenant ({PARTNER_DOMAIN})", flush=True)
        if args.print_env:
            for key, value in settings.items():
                print(f"{key}={value}")
        if not command:
            print("stack is up; Ctrl-C stops it", flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                return 0
            return 0
        try:
            return subprocess.call(command, env=env)
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
