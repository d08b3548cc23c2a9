"""The import graph of the package, read from the source: no circle, and no edge hidden inside a
function (an import inside a function is how a circle stays alive unnoticed).

Every ``import``/``from ... import`` of ``cpc_lightning.*`` anywhere in a module (functions and
``if TYPE_CHECKING:`` blocks included) is an edge; ``from cpc_lightning.x import y`` points at
``cpc_lightning.x.y`` when that is a module, else at ``cpc_lightning.x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "cpc_lightning"

#: The only imports of ``cpc_lightning.*`` allowed inside a function: (module, imported module)
#: -> why it cannot be at the top of the module.
LAZY_PACKAGE_IMPORTS = {
    # `cpc_lightning.load` (module __getattr__): `python -m cpc_lightning.<entry>` and `import
    # cpc_lightning` need not load the feature API (torch, Lightning, Hydra).
    ("cpc_lightning", "cpc_lightning.api"): "the package's __getattr__",
    # StreamingWindows subclasses litdata's dataset: loading it loads litdata, an optional extra.
    ("cpc_lightning.data.audio.streaming", "cpc_lightning.data.audio.streaming_windows"): (
        "imports litdata (optional extra)"
    ),
}

#: Other libraries that may be imported inside a function: optional extras (litdata, wandb,
#: torchaudio, matplotlib, tqdm, scikit-learn and its joblib), heavy ones used on one path only
#: (torchvision's models), and Hydra internals used only to parse command-line overrides.
LAZY_LIBRARIES = (
    "litdata",
    "wandb",
    "torchaudio",
    "matplotlib",
    "tqdm",
    "sklearn",
    "joblib",
    "torchvision.models",
    "hydra._internal",
    "hydra.core.override_parser",
)


def module_files() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool, int]]:
    """``(imported module, inside a function, line)`` for every import in ``path``; package
    imports resolved to the module they load, others kept as written."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool, int]] = []

    def resolve(module: str, names: list[str]) -> list[str]:
        if not module.startswith(PACKAGE):
            return [module]
        return [f"{module}.{n}" if f"{module}.{n}" in modules else module for n in names]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, inside, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level:  # relative: from the package `level - 1` steps up
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    module = ".".join([*base, module] if module else base)
                targets = resolve(module, [a.name for a in child.names])
                found.extend((t, inside, child.lineno) for t in targets)
            visit(child, inside)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """Module -> the package modules it imports; and every import inside a function
    ``(module, imported, line)``."""
    modules = module_files()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    lazy = []
    for name, path in modules.items():
        for target, inside, line in imports(name, path, modules):
            if target in modules:
                edges[name].add(target)
            if inside:
                lazy.append((name, target, line))
    return edges, lazy


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle ``[a, b, ..., a]`` of the graph, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := dfs(start)):
            return cycle
    return None


def test_the_resolver_sees_imports_inside_functions():
    edges, lazy = graph()
    assert "cpc_lightning.api" in edges["cpc_lightning"]  # from the package's __getattr__
    assert ("cpc_lightning", "cpc_lightning.api") in {(m, t) for m, t, _ in lazy}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle():
    cycle = find_cycle(graph()[0])
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_package_import_inside_a_function():
    _, lazy = graph()
    hidden = [
        f"{module}:{line} imports {target}"
        for module, target, line in lazy
        if target.startswith(PACKAGE) and (module, target) not in LAZY_PACKAGE_IMPORTS
    ]
    assert not hidden, "imports of cpc_lightning inside functions:\n" + "\n".join(hidden)


def test_only_optional_or_heavy_libraries_are_imported_inside_functions():
    _, lazy = graph()
    other = [
        f"{module}:{line} imports {target}"
        for module, target, line in lazy
        if not target.startswith(PACKAGE)
        and not any(target == lib or target.startswith(lib + ".") for lib in LAZY_LIBRARIES)
    ]
    assert not other, "imports inside functions of other libraries:\n" + "\n".join(other)
