"""The package's layers are one-way: no import cycle between mxr modules, and the core never
imports the course layer.

Read from the source with ``ast`` (nothing is imported), counting every import: at module level,
inside functions, under ``TYPE_CHECKING``, ``import mxr.x``, ``from mxr.x import y``,
``from mxr import x`` and relative imports. A function-level import hides a cycle from Python's
import machinery, not from this test.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mxr"

#: The top layer: the command line may import anything.
TOP = {"mxr.cli", "mxr.__main__"}
#: The course layer: what the notebooks use (the ``mxr/course/`` package); may import the core.
COURSE_PACKAGE = "mxr.course"
#: The core: models, data, training, evaluation, reporting. Imports nothing above it.
CORE_MODULES = {
    "mxr",
    "mxr.config",
    "mxr.errors",
    "mxr.losses",
    "mxr.engine",
    "mxr.evaluation",
    "mxr.report",
    "mxr.files",
    "mxr.ablate",
}
CORE_PACKAGES = ("mxr.model", "mxr.data", "mxr.engine")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package: ``{"mxr.data.coco": path, ...}`` (packages by their name)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(name: str) -> str:
    if name in TOP:
        return "top"
    if name == COURSE_PACKAGE or name.startswith(COURSE_PACKAGE + "."):
        return "course"
    if name in CORE_MODULES or any(name == p or name.startswith(p + ".") for p in CORE_PACKAGES):
        return "core"
    raise AssertionError(f"module {name} is in no layer; add it to TOP, mxr/course/ or the core")


def imports_of(name: str, path: Path, known: set[str]) -> dict[str, int]:
    """The mxr modules that ``name`` (at ``path``) imports, each with the line of its first import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        while target and target not in known:  # `import mxr.a.b` names the module mxr.a.b
            target = target.rpartition(".")[0]
        if target and target != name:
            found.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "mxr" or alias.name.startswith("mxr."):
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..y import z
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source != "mxr" and not source.startswith("mxr."):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                add(sub if sub in known else source, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The reader itself: a hidden (function-level) import and the forms of import all count."""
    src = tmp_path / "mod.py"
    src.write_text(
        "import mxr.data.coco\n"
        "from mxr import report\n"
        "from mxr.model import build_model\n"
        "def f():\n"
        "    from mxr.course.widgets import jpeg\n"
        "    from . import viz\n"
        "    from .data import shapesx\n"
    )
    known = {"mxr", "mxr.data", "mxr.data.coco", "mxr.data.shapesx", "mxr.model", "mxr.report"}
    known |= {"mxr.course.widgets", "mxr.viz", "mxr.course"}
    found = imports_of("mxr.course", src, known)
    assert set(found) == {
        "mxr.data.coco",
        "mxr.report",
        "mxr.model",
        "mxr.course.widgets",
        "mxr.viz",
        "mxr.data.shapesx",
    }
    assert found["mxr.course.widgets"] == 5
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_every_module_is_in_a_layer() -> None:
    names = set(modules())
    assert {"mxr.engine", "mxr.report", "mxr.course.widgets", "mxr.model.roi_heads"} <= names
    for name in names:
        layer(name)  # raises for a module in no layer


def test_no_import_cycle_between_mxr_modules() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles (each a set of modules that import each other): " + "; ".join(
        " <-> ".join(c) for c in found
    )


@pytest.mark.parametrize("lower", ["core", "course"])
def test_no_module_imports_a_layer_above_it(lower: str) -> None:
    order = {"core": 0, "course": 1, "top": 2}
    bad = [
        f"{name} (line {line}) imports {target} ({layer(target)} layer)"
        for name, targets in import_graph().items()
        if layer(name) == lower
        for target, line in targets.items()
        if order[layer(target)] > order[lower]
    ]
    assert not bad, f"the {lower} layer imports upward:\n" + "\n".join(bad)


def _top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted((REPO / "mxr").rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text())
    return out


def test_every_public_name_has_one_home() -> None:
    """A public function, class or constant is defined in one module, and every ``from mxr...
    import`` (package, tests, notebooks) names that module: no name is re-exported."""
    modules = _modules()
    homes: dict[str, list[str]] = {}
    for mod, tree in modules.items():
        for name in _top_level_names(tree):
            if not name.startswith("_"):
                homes.setdefault(name, []).append(mod)
    twice = {n: m for n, m in homes.items() if len(m) > 1}
    assert not twice, f"defined in two modules: {twice}"
    # a module that imports a name only to pass it on needs the linter's unused-import waiver
    waived = [str(p) for p in sorted((REPO / "mxr").rglob("*.py")) if "noqa: F401" in p.read_text()]
    assert not waived, f"re-exports (an import kept with noqa: F401): {waived}"

    sources = {f"{m}.py": tree for m, tree in modules.items()}
    for folder in ("tests", "docs", "benchmarks"):
        for path in (REPO / folder).glob("*.py"):
            sources[str(path.relative_to(REPO))] = ast.parse(path.read_text())
    for path in _text_files():  # shell heredocs, Makefile one-liners, examples in Markdown
        sources[str(path.relative_to(REPO))] = ast.parse(_imports_in_text(path.read_text()))
    for path in sorted((REPO / "notebooks").rglob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join(
            "\n".join(line for line in "".join(c["source"]).splitlines() if line[:1] not in "%!")
            for c in cells
            if c["cell_type"] == "code"
        )
        sources[str(path.relative_to(REPO))] = ast.parse(code)
    elsewhere = _misplaced_imports(sources, modules)
    assert not elsewhere, "imported from a module that does not define it:\n" + "\n".join(elsewhere)


def _text_files() -> list[Path]:
    """Files other than Python sources and notebooks that hold ``from mxr... import`` lines."""
    found = [REPO / "Makefile", *sorted((REPO / ".ci").glob("*"))]
    for pattern in ("*.sh", "*.md"):
        found += [p for p in REPO.rglob(pattern) if not {".venv", "runs", "data"} & set(p.parts)]
    return [p for p in found if p.is_file()]


def _imports_in_text(text: str) -> str:
    """The ``from mxr... import`` statements in ``text``, one per line, as Python source."""
    pattern = r"from (mxr[\w.]*) import (\([^)]*\)|[\w ,]+)"
    lines = []
    for module, names in re.findall(pattern, text):
        listed = [n for n in re.split(r"[\s,()]+", names) if n]
        lines.append(f"from {module} import {', '.join(listed)}")
    return "\n".join(lines)


def _misplaced_imports(sources: dict[str, ast.Module], modules: dict[str, ast.Module]) -> list[str]:
    """Every ``from mxr.x import y`` in ``sources`` where ``mxr.x`` neither defines ``y`` nor has
    a submodule ``y``."""
    out = []
    for where, tree in sources.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mxr":
                for alias in node.names:
                    defined_there = alias.name in _top_level_names(
                        modules.get(node.module, ast.Module([], []))
                    )
                    submodule = f"{node.module}.{alias.name}" in modules
                    if not (defined_there or submodule):
                        out.append(f"{where}: from {node.module} import {alias.name}")
    return out


def test_the_one_home_check_names_a_re_export() -> None:
    modules = _modules()
    reexport = {"x.py": ast.parse("from mxr.report import read_metrics\nfrom mxr import ablate\n")}
    assert _misplaced_imports(reexport, modules) == ["x.py: from mxr.report import read_metrics"]
    shell = "python - <<'PY'\nfrom mxr.engine import (\n    load_checkpoint,\n)\nPY\n"
    embedded = {"x.sh": ast.parse(_imports_in_text(shell))}
    assert _misplaced_imports(embedded, modules) == ["x.sh: from mxr.engine import load_checkpoint"]
    home = {"x.py": ast.parse("from mxr.files import read_metrics\n")}
    assert _misplaced_imports(home, modules) == []
