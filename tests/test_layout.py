"""The package's layout rules, read from the source: imports run one way (cli -> recipe -> training -> hub ->
evaluation -> losses / data -> modeling), the two modeling files that travel to the Hub import nothing else of
ours, no module imports another module's private name, and no function is over 60 lines of code. Benchmark
scripts stay under 500 lines each (one job per file)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mipic_hf"
# Each layer may import its own package and any layer of lower rank. The top-level command shims
# (``python -m mipic_hf.run`` ...) and ``__init__`` sit above the command line.
RANK = {
    "modeling": 0,  # configuration_mipic.py and modeling_mipic.py
    "data": 1,
    "losses": 1,
    "evaluation": 2,
    "hub": 3,
    "training": 4,
    "recipe": 5,
    "cli": 6,
}
TOP = 7


def layer_of(module: str) -> str:
    """``mipic_hf.hub.card`` -> ``hub``; a top-level module is its own name."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    return "modeling" if name in ("configuration_mipic", "modeling_mipic") else name


def rank_of(module: str) -> int:
    return RANK.get(layer_of(module), TOP)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import of ours in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if target.startswith("mipic_hf"):
                if not node.module:  # from . import x: x is a module
                    found += [(f"{target}.{n}", [], node.lineno) for n in names]
                else:
                    found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("mipic_hf")]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_walk_sees_the_package():
    """The walk is not vacuous: it finds every layer and resolves relative imports to real modules."""
    assert {layer_of(module_name(p)) for p in SOURCES} >= set(RANK)
    edges = {(module_name(p), target) for p in SOURCES for target, _, _ in imports(p)}
    assert ("mipic_hf.hub.export", "mipic_hf.hub.card") in edges
    assert ("mipic_hf.recipe.plan", "mipic_hf.recipe.checks") in edges
    assert ("mipic_hf.modeling_mipic", "mipic_hf.configuration_mipic") in edges


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_import_of_ours_names_a_module_that_exists(path: Path):
    """Imports inside functions run late: one that names a moved or missing module is caught here, not in use."""
    missing = [
        f"line {line}: {target}"
        for target, _, line in imports(path)
        if not (
            Path(PACKAGE.parent, *target.split(".")).with_suffix(".py").is_file()
            or Path(PACKAGE.parent, *target.split("."), "__init__.py").is_file()
        )
    ]
    assert not missing, "\n".join(missing)


def module_path(module: str) -> Path:
    base = Path(PACKAGE.parent, *module.split("."))
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"


@functools.cache
def defined_names(module: str) -> set[str]:
    """Names a module binds at its top level (including under if / try), and its submodules if a package."""
    path = module_path(module)
    names = {p.stem for p in path.parent.glob("*.py")} | {p.name for p in path.parent.iterdir() if p.is_dir()}
    names = names if path.name == "__init__.py" else set()
    pending = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try)):
            pending += node.body + node.orelse + getattr(node, "finalbody", [])
            pending += [n for h in getattr(node, "handlers", []) for n in h.body]
    return names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_imported_name_exists(path: Path):
    """``from mipic_hf.x import y``: ``x`` binds ``y`` (a name a move left behind fails here, not in use)."""
    missing = [
        f"line {line}: {name} from {target}"
        for target, names, line in imports(path)
        if module_path(target).is_file()
        for name in names
        if name != "*" and name not in defined_names(target)
    ]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path):
    here = module_name(path)
    wrong = [
        f"line {line}: {here} (rank {rank_of(here)}) imports {target} (rank {rank_of(target)})"
        for target, _, line in imports(path)
        if layer_of(target) != layer_of(here) and rank_of(target) >= rank_of(here)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", ["configuration_mipic", "modeling_mipic"])
def test_hub_code_files_are_self_contained(name: str):
    """The files copied into every export import nothing of ours but each other (they run from the Hub)."""
    allowed = {"mipic_hf.configuration_mipic", "mipic_hf.modeling_mipic"}
    targets = {target for target, _, _ in imports(PACKAGE / f"{name}.py")}
    assert targets <= allowed, targets - allowed


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_crosses_a_module(path: Path):
    private = [
        f"line {line}: {name} from {target}"
        for target, names, line in imports(path)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not private, "\n".join(private)


MAX_FUNCTION_LINES = 60  # lines of code: the docstring, blank lines and comment lines do not count


def code_lines(source: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of code in a function's body, after its docstring; nested functions count in their parent."""
    body = node.body
    if (
        isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    if not body:
        return 0
    lines = source[body[0].lineno - 1 : node.end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def test_code_lines_counts_the_body_only() -> None:
    source = 'def f():\n    """Doc.\n\n    More."""\n    # a comment\n    x = 1\n\n    return x\n'
    node = ast.parse(source).body[0]
    assert code_lines(source.splitlines(), node) == 2


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_needs_a_scroll_bar(path: Path):
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    long = [
        f"{node.name} (line {node.lineno}): {code_lines(lines, node)} lines"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(lines, node) > MAX_FUNCTION_LINES
    ]
    assert not long, f"split these into functions of at most {MAX_FUNCTION_LINES} lines of code: {long}"


MAX_BENCHMARK_LINES = 500
BENCHMARKS = sorted((PACKAGE.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_no_benchmark_file_does_several_jobs(path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_BENCHMARK_LINES, f"{path.name}: {lines} lines; split it by job"
