"""The design rules, held by the code (../shared/spec/architecture.md): arrows point down only, the pure core
stays pure, every module says what it is, no function is too complex to read, and the static checks pass.

Layers, top to bottom: cli -> local -> app -> admin -> engine -> adapters / ports -> core.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYNC = REPO / "sync"

# What each layer may import from sync/ (itself always allowed).
ALLOWED = {
    "core": set(),
    "ports": {"core"},
    "adapters": {"core", "ports"},
    "engine": {"core", "ports"},
    "admin": {"core", "ports", "engine"},
    "app": {"core", "ports", "engine", "adapters", "admin"},
    "local": {"core", "ports", "engine", "adapters", "admin", "app"},
    "cli": {"core", "ports", "engine", "adapters", "admin", "app", "local"},
    "__main__": {"cli"},
    "__init__": set(),
}
PURE_FORBIDDEN = ("azure", "msgraph", "kiota", "aiohttp", "httpx", "opentelemetry", "os", "socket", "asyncio", "time", "random")


def _layer(path: Path) -> str:
    parts = path.relative_to(SYNC).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[str]:
    """Absolute module names imported by a module of sync/, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ["sync", *path.relative_to(SYNC).parent.parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
                found += names
            elif node.module:
                found.append(node.module)
    return found


MODULES = sorted(SYNC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down_only(path):
    layer = _layer(path)
    allowed = ALLOWED[layer] | {layer}
    for name in _imports(path):
        top = name.split(".")[0]
        assert top != "devtenant", f"{path.name} imports the emulator: nothing in sync/ may"
        if top == "sync":
            target = name.split(".")[1] if "." in name else "__init__"
            assert target in allowed, f"{path.relative_to(REPO)} ({layer}) imports {name}; {layer} may import {sorted(allowed)}"


@pytest.mark.parametrize("path", [*sorted((SYNC / "core").rglob("*.py")), *sorted((SYNC / "ports").rglob("*.py"))],
                         ids=lambda p: str(p.relative_to(SYNC)))
def test_core_and_ports_do_no_io_and_import_no_azure_package(path):
    for name in _imports(path):
        assert name.split(".")[0] not in PURE_FORBIDDEN, f"{path.name} imports {name}: the core stays pure (no I/O, no clock)"
    source = path.read_text()
    for clock in ("datetime.now(", "datetime.utcnow(", "time.time(", "date.today("):
        assert clock not in source, f"{path.name} reads the clock ({clock}); `now` is an argument"


def test_the_layers_are_the_folders():
    """A reader finds the layers from the folder list alone."""
    packages = {p.name for p in SYNC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == {"core", "ports", "engine", "adapters", "app", "admin", "local"}
    stray = {p.name for p in SYNC.glob("*.py")} - {"__init__.py", "__main__.py", "cli.py"}
    assert not stray, f"modules outside a layer: {sorted(stray)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_opens_with_a_docstring(path):
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path.relative_to(REPO)} has no docstring saying what it is"


def test_no_function_in_sync_is_rated_e_or_f_by_radon():
    from radon.complexity import cc_rank, cc_visit
    worst = []
    for path in MODULES:
        for block in cc_visit(path.read_text()):
            if cc_rank(block.complexity) in "EF":
                worst.append(f"{path.relative_to(REPO)}:{block.lineno} {block.name} {cc_rank(block.complexity)} ({block.complexity})")
    assert not worst, "split these: " + "; ".join(worst)


MAX_LINES, MAX_METHODS = 500, 25


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_modules_and_classes_stay_small_enough_to_read(path):
    """One concept per module: none over 500 lines, no class with more than 25 methods."""
    source = path.read_text()
    assert source.count("\n") <= MAX_LINES, f"{path.relative_to(REPO)} has {source.count(chr(10))} lines; split it by concern"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            assert len(methods) <= MAX_METHODS, f"{path.relative_to(REPO)}: {node.name} has {len(methods)} methods"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_is_rated_a_by_radons_maintainability_index(path):
    from radon.metrics import mi_rank, mi_visit
    score = mi_visit(path.read_text(), multi=True)
    assert mi_rank(score) == "A", f"{path.relative_to(REPO)}: maintainability index {score:.1f} ({mi_rank(score)})"


def test_observations_live_in_the_partition_only_inline_sets_are_read_by_the_migration_alone():
    """The previous version could carry observations on mailbox rows; only the migration that moves them knows of it."""
    mentions = sorted(str(p.relative_to(REPO)) for p in MODULES if "inline" in p.read_text().lower())
    assert mentions == ["sync/adapters/tables/migrations.py"], mentions


def test_no_benchmark_instrumentation_in_the_product():
    """The bench measures from outside (bench/round_trips.py wraps the Table client's documented request hook)."""
    for path in MODULES:
        source = path.read_text()
        assert "bench" not in {name.split(".")[0] for name in _imports(path)}, f"{path.relative_to(REPO)} imports the bench"
        for counter in ("ROUND_TRIPS", "count_round_trips", "round_trips"):
            assert counter not in source, f"{path.relative_to(REPO)} counts {counter}: measure from bench/"


# Private attributes of the SDKs the product reaches, each behind one named seam whose contract test pins it to the
# SDK version in requirements.txt.
SDK_SEAMS = {"_client._client._pipeline": ("sync/adapters/table_wire.py", "tests/contract/test_table_wire.py")}


def test_no_private_attribute_of_an_sdk_object_is_reached_but_through_a_seam():
    private = re.compile(r"\b(?:adapter|client|service|pipeline|transport|credential)\._[a-z]\w*")
    found = sorted(f"{p.relative_to(REPO)}: {m}" for p in MODULES for m in private.findall(p.read_text())
                   if str(p.relative_to(REPO)) not in {seam for seam, _ in SDK_SEAMS.values()})
    assert not found, found


def test_private_sdk_attributes_only_behind_their_named_seams():
    for attribute, (seam, contract) in SDK_SEAMS.items():
        users = sorted(str(p.relative_to(REPO)) for p in MODULES if attribute in p.read_text())
        assert users == [seam], f"{attribute} is reached outside its seam: {users}"
        assert attribute.split(".")[-1] in (REPO / contract).read_text(), f"{contract} does not pin {attribute}"


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_mypy_finds_no_error_in_sync():
    result = _tool("mypy")        # configuration: pyproject.toml
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_ruff_finds_nothing():
    result = _tool("ruff", "check", "sync", "devtenant", "tests", "bench", "tools", "function_app.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_the_readmes_module_map_matches_the_tree():
    readme = (REPO / "README.md").read_text()
    start = readme.index("```\nfunction_app.py")
    block = readme[start: readme.index("```", start + 3)]
    named = set(re.findall(r"([a-z_]+\.py)", block))
    modules = {p.name for p in MODULES} - {"__init__.py", "__main__.py"}
    assert modules <= named, f"modules missing from the README's map: {sorted(modules - named)}"
    existing = modules | {p.name for p in REPO.glob("*.py")}
    assert named <= existing, f"the README's map names modules that do not exist: {sorted(named - existing)}"
    packages = {p.name for p in SYNC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert all(f"{name}/" in block for name in packages)

