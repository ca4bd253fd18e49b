"""How the command line shows things: tables that fit a terminal, a progress bar, and readable summaries of the
operations' results and of a cycle (ids and counts; addresses only where the administrator asked about a mailbox)."""
from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any


def table(rows: list[dict], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    def cell(r: dict, c: str) -> str:
        value = r.get(c)
        return "" if value is None else str(value)

    widths = {c: max(len(c), *(len(cell(r, c)) for r in rows)) for c in columns}
    line = "  ".join(c.ljust(widths[c]) for c in columns)
    out = [line, "  ".join("-" * widths[c] for c in columns)]
    out += ["  ".join(cell(r, c).ljust(widths[c]) for c in columns).rstrip() for r in rows]
    if sys.stdout.isatty():                      # on a terminal, long last columns are cut at its width
        width = shutil.get_terminal_size().columns
        out = [o if len(o) <= width else o[: max(10, width - 1)] + "…" for o in out]
    return "\n".join(out)


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled and sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.enabled:
            width = 30
            filled = int(width * done / max(1, total))
            elapsed = time.monotonic() - self.started
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {elapsed:.0f} s")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def summary(result: dict[str, Any]) -> str:
    """A readable summary of a mailbox operation's result (no Python reprs)."""
    if "discovered" in result:
        lines = []
        for environment, counts in result["discovered"].items():
            lines.append(f"{environment}: {counts['registered']} registered as pending, {counts['already']} already registered, "
                         f"{counts['bound_elsewhere']} bound to another environment, {counts['no_mailbox']} without a mailbox"
                         + (f", {counts['no_tenant']} whose domain is in no tenant of MAILBOX_TENANTS" if counts.get("no_tenant") else "")
                         + (f", {counts['invalid_address']} whose address is not a valid mailbox address (fix it on the user "
                            "record in Dynamics 365)" if counts.get("invalid_address") else ""))
        return "\n".join(lines) or "no environment"
    return "\n".join(f"{k}: {v}" for k, v in result.items())


def cycle_rows(summary: dict) -> list[dict]:
    rows = []
    for r in summary.get("mailboxes", []):
        counts = r.get("counts") or {}
        rows.append({"mailbox": r["mailbox"], "outcome": r["outcome"], "created": counts.get("created", 0),
                     "updated": counts.get("updated", 0),
                     "deleted": counts.get("deleted", 0) + counts.get("cancelled", 0), "unlinked": counts.get("unlinked", 0),
                     "skipped": counts.get("skipped", 0), "failed": counts.get("failed", 0) + counts.get("invalid", 0),
                     "error": (r.get("error") or "")[:60]})
    return rows


CYCLE_COLUMNS = ("mailbox", "outcome", "created", "updated", "deleted", "unlinked", "skipped", "failed", "error")




def cycle_notes(summary: dict) -> str:
    """What a cycle's environments say besides its mailboxes: one not collected, or read whole without tracking (T5)."""
    environments = summary.get("environments", [])
    notes = "".join(f"\nenvironment not collected: {e['environment']}: {e['error']}" for e in environments if e.get("error"))
    return notes + "".join(f"\nchange tracking is off for {', '.join(e['tracking_off'])} in {e['environment']}: every cycle reads the "
                           "whole window (T5); turn it on (docs/deploy.md, step 2)" for e in environments if e.get("tracking_off"))
