"""CI check of the infrastructure: every .bicep file parses, checkov finds no failed check, and every
checkov suppression carries its reason next to the resource.

    .venv-iac/bin/python tools/check_infra.py [DIR]      (exit 0 = clean)
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

SKIP = re.compile(r"#checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def parse_errors(folder: Path) -> list[str]:
    from pycep import BicepParser
    errors = []
    for path in sorted(folder.rglob("*.bicep")):
        try:
            BicepParser().parse(file_path=path)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            errors.append(f"{path}: does not parse: {first}")
    return errors


def unexplained_skips(folder: Path) -> list[str]:
    problems = []
    for path in sorted(folder.rglob("*.bicep")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            m = SKIP.search(line)
            if m and len((m.group(2) or "").strip()) < 15:
                problems.append(f"{path}:{number}: checkov skip {m.group(1)} needs a reason after the colon")
    return problems


def checkov_failures(folder: Path) -> list[str]:
    exe = Path(sys.executable).with_name("checkov")
    result = subprocess.run([str(exe), "-d", str(folder), "--framework", "bicep", "--skip-download", "--quiet", "-o", "json"],
                            capture_output=True, text=True)
    try:
        report = json.loads(result.stdout or "{}")
    except json.JSONDecodeError:
        return [f"checkov did not produce a report: {result.stderr.strip()[-500:]}"]
    reports = report if isinstance(report, list) else [report]
    failures = []
    for r in reports:
        for check in r.get("results", {}).get("failed_checks", []):
            failures.append(f"{check.get('file_path')}: {check['check_id']} {check.get('check_name')} ({check.get('resource')})")
        summary = r.get("summary", {})
        if not summary.get("passed") and not summary.get("failed") and not failures and r.get("results") is None:
            failures.append("checkov found no Bicep resources to check")
    return failures


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "infra")
    if not list(folder.rglob("*.bicep")):
        print(f"no .bicep files under {folder}")
        return 1
    problems = parse_errors(folder) + unexplained_skips(folder)
    if not problems:
        problems += checkov_failures(folder)
    for p in problems:
        print(p)
    print(f"infrastructure check: {'FAILED' if problems else 'passed'} ({len(list(folder.rglob('*.bicep')))} Bicep files)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
