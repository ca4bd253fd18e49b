"""A command line an administrator can trust: one line and an exit code of its own for a failure of the world
outside, a traceback only with --debug, no crash when piped into head, real objects in --json, arguments that
refuse nonsense, help that lists the exit codes, and the webhook receiver started locally."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.stack


def cli(env: dict, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sync", *args], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120, **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_service_that_cannot_be_reached_is_one_line_and_exit_code_4(tenant, table_prefix):
    env = {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}
    port = closed_port()
    dead = {**env, "STATE_STORAGE_CONNECTION_STRING": env["STATE_STORAGE_CONNECTION_STRING"].replace(
        env["STATE_STORAGE_CONNECTION_STRING"].split("TableEndpoint=")[1].split(";")[0], f"http://127.0.0.1:{port}/devstoreaccount1")}
    failed = cli(dead, "mailboxes", "list")
    assert failed.returncode == 4, failed.stderr[-2000:]
    assert failed.stderr.startswith("failed:") and len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr
    assert "Traceback" in cli(dead, "--debug", "mailboxes", "list").stderr
    garbled = cli({**env, "STATE_STORAGE_CONNECTION_STRING": "not a connection string"}, "runs")
    assert garbled.returncode in (2, 4) and "Traceback" not in garbled.stderr and garbled.stderr.strip()


def test_piped_into_head_arguments_checked_help_and_real_json(tenant, table_prefix):
    env = {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}
    tenant.control("POST", "/demo", {"technicians": 4, "bookings": 30})
    discovered = cli(env, "mailboxes", "discover")
    assert discovered.returncode == 0 and "registered as pending" in discovered.stdout and "{" not in discovered.stdout
    piped = subprocess.run(f"{sys.executable} -m sync mailboxes list | head -1", shell=True, cwd=REPO, env={**os.environ, **env},
                           capture_output=True, text=True, timeout=120)
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr and piped.stdout.strip()
    bad_limit = cli(env, "runs", "--limit", "0")
    assert bad_limit.returncode == 2 and "1 to 1000" in bad_limit.stderr
    missing = cli(env, "diagnose", "00000000-0000-0000-0000-0000000000ff")
    assert missing.returncode == 1 and missing.stdout.startswith("booking_not_found")
    for command in ("run", "mailboxes", "runs", "plan", "diagnose", "filters", "serve-webhook"):
        assert "exit codes:" in cli(env, command, "--help").stdout, command
    assert cli(env, "mailboxes", "approve", "--all").returncode == 0
    cli(env, "mailboxes", "test", "--all")
    cli(env, "run")
    runs = json.loads(cli(env, "--json", "runs", "--limit", "1").stdout)
    assert isinstance(runs[0]["environments"], list) and isinstance(runs[0]["totals"], dict)   # objects, not JSON text
    listing = json.loads(cli(env, "--json", "mailboxes", "list").stdout)["mailboxes"]
    assert {r["enabled"] for r in listing if r["test"] == "failure"} == {"no"}                 # only mailboxes that sync


def test_the_webhook_receiver_starts_locally_with_the_documented_command(tenant, table_prefix):
    env = {**os.environ, **tenant.environment(), "STATE_TABLE_PREFIX": table_prefix, "WEBHOOK_FUNCTION_KEY": "local-key"}
    port = closed_port()
    server = subprocess.Popen([sys.executable, "-m", "sync", "serve-webhook", "--port", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening" in server.stdout.readline()
        url = f"http://127.0.0.1:{port}/api/dataverse/webhook"
        assert httpx.post(url, content=b"{}").status_code == 401
        answered = httpx.post(url + "?code=local-key", content=b"{}")
        assert answered.status_code == 400 and "PrimaryEntityName" in answered.text
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert time


def _on_a_terminal(env: dict, *args: str) -> tuple[int, str, str]:
    """Runs the CLI with stderr on a pseudo-terminal (as an admin's shell has it); returns (code, stdout, terminal text)."""
    import pty
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sync", *args], cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=terminal, text=True)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:                                   # the terminal closed: the command ended
            break
        if not chunk:
            break
        shown += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(controller)
    return proc.returncode, out, shown.decode(errors="replace")


def test_long_commands_show_progress_on_a_terminal_only(tenant, table_prefix):
    env = {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}
    tenant.control("POST", "/demo", {"technicians": 4, "bookings": 30})
    code, _, shown = _on_a_terminal(env, "mailboxes", "discover")
    assert code == 0 and "discover [" in shown and "s" in shown.split("]")[-1], shown
    assert cli(env, "mailboxes", "approve", "--all").returncode == 0
    code, _, shown = _on_a_terminal(env, "mailboxes", "test", "--all")
    assert "test [" in shown and "/" in shown, shown
    code, out, shown = _on_a_terminal(env, "run")
    assert code == 0, out
    done = [line for line in shown.replace("\r", "\n").splitlines() if line.startswith("syncing mailboxes [")]
    assert done and done[-1].split("]")[1].split()[0].split("/")[0] == done[-1].split("]")[1].split()[0].split("/")[1], shown
    quiet = cli(env, "run")                               # not a terminal: no progress line
    assert quiet.returncode == 0 and "syncing mailboxes" not in quiet.stderr
    code, out, shown = _on_a_terminal(env, "--json", "run")
    assert code == 0 and "syncing mailboxes" not in shown and json.loads(out)["outcome"] == "succeeded"
