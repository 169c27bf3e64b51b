"""The project's import graph, read from the source with ``ast`` (nothing is imported).

Module-level imports between the project's modules form no cycle, and no module of ``disco``
imports another of ``disco`` inside a function (an import there would hide a cycle or defer a
cost nobody sees), except the lazy imports listed in ``LAZY`` with the reason for each.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("disco", "disco_service")
# importer -> the project module it imports inside a function, and why
LAZY = {
    ("disco.settings.prompt_text", "disco.clip_model"): "CLIP's tokenizer needs open_clip and torch; checking prompts "
    "without tokens (validate_settings(tokens=False), the client's quick check) must not load them",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules an import statement runs: the named module, its parent packages (their
    ``__init__`` runs first) and, for ``from package import name``, the submodule ``name``."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
    found = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in known:
                found.add(name)
    own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1 + is_package)}
    return found - own_packages - {module}  # a module's own packages are running already


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """(module-level edges between project modules, the imports of project modules inside functions
    as (importer, imported, line))."""
    modules = project_modules()
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    inside_functions = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        nested = {id(n) for f in functions for n in ast.walk(f) if isinstance(n, ast.Import | ast.ImportFrom)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = imported(node, name, is_package, known)
            if id(node) in nested:
                inside_functions += [(name, target, node.lineno) for target in sorted(targets)]
            else:
                graph[name] |= targets
    return graph, inside_functions


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the modules along it (the first repeated at the end), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_reader_sees_relative_imports_and_parent_packages():
    graph, _ = import_graph()
    assert "disco.errors" in graph["disco.settings.prompt_text"]
    assert "disco.settings.validation" in graph["disco.settings"]
    assert "disco.settings.fields" in graph["disco.settings.coercion"]
    assert "disco.settings" in graph["disco.guidance"]  # from .settings import ...
    assert "disco.settings" not in graph["disco.settings.fields"]  # its own package is not an edge


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_project_modules():
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_disco_module_imports_another_inside_a_function():
    _, inside = import_graph()
    hidden = [
        f"{importer} line {line} imports {target}"
        for importer, target, line in inside
        if importer.split(".")[0] == "disco" and target.split(".")[0] == "disco" and (importer, target) not in LAZY
    ]
    assert not hidden, "imports inside functions (move what both need down, or list it in LAZY):\n" + "\n".join(hidden)


def test_every_listed_lazy_import_still_exists():
    _, inside = import_graph()
    assert set(LAZY) <= {(importer, target) for importer, target, _ in inside}


def test_every_package_is_declared_for_installation():
    """``pyproject.toml`` lists each package of the project (a missing one is absent from a wheel)."""
    import tomllib

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("disco", "disco_service")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found == declared
