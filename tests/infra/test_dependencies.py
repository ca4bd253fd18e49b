"""Dependencies install the same everywhere: every lock pins every package with its hashes, the deployed lock
holds exactly the app's pins, and the tests run on exactly the versions that are deployed. `make lock` refreshes
the locks from the *.in files."""
from __future__ import annotations

import re

from tests.conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def locked(name: str) -> dict[str, str]:
    text = (REPO / name).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text)
    pins = {}
    for entry in entries:
        m = PIN.match(entry.strip())
        if m is None:
            continue
        assert "--hash=sha256:" in entry, f"{name}: {m.group(1)} has no hash"
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def direct(name: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / name).read_text().splitlines():
        m = PIN.match(line.strip())
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_every_lock_pins_every_package_with_hashes():
    for name in ("requirements.txt", "requirements-dev.txt", "requirements-iac.txt"):
        assert len(locked(name)) > 5


def test_the_deployed_lock_holds_the_apps_pins_and_the_tests_run_on_the_deployed_versions():
    runtime, dev = locked("requirements.txt"), locked("requirements-dev.txt")
    for package, version in direct("requirements.in").items():
        assert runtime.get(package) == version, f"{package}: requirements.in says {version}, the lock {runtime.get(package)}"
    different = {p: (v, dev.get(p)) for p, v in runtime.items() if dev.get(p) != v}
    assert not different, f"the tests would not run on what is deployed: {different}"
    for package, version in direct("requirements-dev.in").items():
        assert dev.get(package) == version, package
