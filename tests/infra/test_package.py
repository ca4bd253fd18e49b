"""The deployed package holds the app and nothing else: no virtual environment, emulator, tests, benchmarks,
infrastructure, tooling or local settings. The file list is built the way the publish tools build it: every file
under the project folder, less what .funcignore's gitignore-style patterns match."""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from tests.conftest import REPO


def _patterns() -> list[str]:
    lines = (REPO / ".funcignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(relative: Path, patterns: list[str]) -> bool:
    parts = relative.parts
    for pattern in patterns:
        directory_only = pattern.endswith("/")
        bare = pattern.rstrip("/").lstrip("/")
        if "/" in bare:                                      # anchored to the project folder
            if fnmatch.fnmatch(relative.as_posix(), bare) or relative.as_posix().startswith(bare + "/"):
                return True
            continue
        names = parts[:-1] if directory_only else parts      # a name anywhere in the path
        if any(fnmatch.fnmatch(name, bare) for name in names):
            return True
    return False


def package_files(root: Path = REPO) -> list[str]:
    patterns = _patterns()
    out = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not _ignored(here / d / "x", patterns)]      # an ignored folder is not entered
        out += [(here / f).as_posix() for f in files if not _ignored(here / f, patterns)]
    return sorted(out)


def test_the_package_holds_the_app_and_nothing_else(tmp_path):
    # A checkout as a developer has it: the virtual environments, caches and azd state exist beside the code.
    for extra in (".venv/bin/python", ".venv-iac/bin/python", ".azure/dev/.env", "node_modules/azurite/x.js",
                  ".mypy_cache/x", "sync/__pycache__/x.pyc", "local.settings.json"):
        (tmp_path / extra).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / extra).write_text("x")
    for path in package_files():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    (tmp_path / ".funcignore").write_text((REPO / ".funcignore").read_text())
    files = package_files(tmp_path)
    assert {"function_app.py", "host.json", "requirements.txt", "sync/app/functions.py", "sync/core/plan.py"} <= set(files)
    top = {f.split("/")[0] for f in files}
    assert top <= {"function_app.py", "host.json", "requirements.txt", "sync", ".funcignore"}, sorted(top)
    assert not [f for f in files if f.endswith(".pyc") or "__pycache__" in f]
