"""The package's import graph keeps the layers README's "Architecture" section draws.

Read with the standard library's ``ast`` (nothing is imported): every ``import`` of a
``localmem`` module, at module level, under ``TYPE_CHECKING`` or inside a function, is an
edge. The graph must have no cycle, every edge must go to the same layer or a lower one,
only the storage and LLM wrappers load the native ``_core``, no module reaches for another
module's ``_private`` names above the storage layer, and the faces (CLI, MCP server, TUI,
import/export) use the public API only.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first; a module's layer is that of the longest prefix listed.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("native", ("localmem._core",)),
    (
        "base",
        (
            "localmem.errors", "localmem.files", "localmem.paths", "localmem.machine",
            "localmem.registry", "localmem.text", "localmem.forgetting",
        ),
    ),
    ("storage", ("localmem.store", "localmem.catalog", "localmem.embed", "localmem.e5",
                 "localmem.llm")),
    ("records", ("localmem.memstore", "localmem.items")),
    ("policies", ("localmem.recall", "localmem.lifecycle", "localmem.sync")),
    ("api", ("localmem", "localmem.memory", "localmem.assistant", "localmem.keys")),
    (
        "faces",
        (
            "localmem.__main__", "localmem.cli", "localmem.mcp", "localmem.tui",
            "localmem.portable", "localmem.doctor", "localmem.testing",
        ),
    ),
)  # fmt: skip
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}

# What the faces may import besides each other: the package's public names.
PUBLIC = ("localmem", "localmem.errors", "localmem.keys", "localmem.llm", "localmem.paths",
          "localmem.files", "localmem.machine")  # fmt: skip
FACES = ("localmem.cli", "localmem.mcp", "localmem.tui", "localmem.portable")
NATIVE_USERS = ("localmem.store", "localmem.llm")


def _module_files() -> dict[str, Path]:
    """Module name -> source file: the package, and the top-level ``tui/`` it ships as
    ``localmem.tui``."""
    out: dict[str, Path] = {}
    for top, name in ((ROOT / "localmem", "localmem"), (ROOT / "tui", "localmem.tui")):
        for f in sorted(top.rglob("*.py")):
            parts = list(f.relative_to(top).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([name, *parts])] = f
    out["localmem._core"] = ROOT / "localmem" / "_core.pyi"
    return out


MODULES = _module_files()


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    where: str  # "module", "type" (under TYPE_CHECKING) or "function"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, where: str = "module") -> Iterator[tuple[ast.AST, str]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, where
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _imports(node, "function")
        elif isinstance(node, ast.If) and where == "module" and _is_type_checking(node.test):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), "type")
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), where)
        else:
            yield from _imports(node, where)


def _package_of(mod: str) -> str:
    f = MODULES[mod]
    return mod if f.name == "__init__.py" else mod.rpartition(".")[0]


@functools.cache
def _tree(mod: str) -> ast.Module:
    """A module's syntax tree, parsed once for every test."""
    path = MODULES[mod]
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _edges(mod: str) -> Iterator[tuple[Edge, str | None]]:
    """Each import of a localmem module, with the name imported from it (``from m import
    name`` where name is not a module itself) or None."""
    if MODULES[mod].suffix == ".pyi":
        return
    for node, where in _imports(_tree(mod)):
        targets: list[tuple[str, str | None]] = []
        if isinstance(node, ast.Import):
            targets = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package_of(mod).split(".")
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base]) if base else ".".join(pkg)
            for a in node.names:
                sub = f"{base}.{a.name}"
                targets.append((sub, None) if sub in MODULES else (base, a.name))
        for t, name in targets:
            if t == "localmem" or t.startswith("localmem."):
                yield Edge(mod, t, node.lineno, where), name


def _all_edges() -> list[tuple[Edge, str | None]]:
    return [e for mod in MODULES for e in _edges(mod)]


def layer(mod: str) -> str:
    best, rank = "", -1
    for name, prefixes in LAYERS:
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > len(best):
                best, rank = p, RANK[name]
    if rank < 0:
        raise AssertionError(f"{mod} is in no layer: add it to LAYERS (and README's diagram)")
    return LAYERS[rank][0]


def _within(mod: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def _where(e: Edge) -> str:
    return f"{MODULES[e.src].relative_to(ROOT)}:{e.line} ({e.where})"


def test_every_module_has_a_layer() -> None:
    missing = []
    for mod in MODULES:
        try:
            layer(mod)
        except AssertionError:
            missing.append(mod)
    assert not missing, f"modules in no layer: {missing}"


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e, _ in _all_edges():
        if e.dst in MODULES and e.dst != e.src:
            graph[e.src].add(e.dst)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n) :], n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_go_down_the_layers() -> None:
    up = [
        f"{_where(e)}: {e.src} ({layer(e.src)}) imports {e.dst} ({layer(e.dst)})"
        for e, _ in _all_edges()
        if e.dst in MODULES and RANK[layer(e.dst)] > RANK[layer(e.src)]
    ]
    assert not up, "imports up the layers:\n" + "\n".join(up)


def test_only_the_storage_and_llm_wrappers_load_the_native_core() -> None:
    bad = [
        f"{_where(e)}: {e.src} imports localmem._core"
        for e, _ in _all_edges()
        if e.dst == "localmem._core" and not _within(e.src, NATIVE_USERS)
    ]
    assert not bad, "\n".join(bad)


def _defined(mod: str) -> set[str]:
    """The names a module defines: functions, classes, attributes and variables it assigns."""
    if MODULES[mod].suffix == ".pyi":
        return set()
    tree = _tree(mod)
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    out = {n.name for n in ast.walk(tree) if isinstance(n, defs)}
    out |= {
        n.attr if isinstance(n, ast.Attribute) else n.id
        for n in ast.walk(tree)
        if isinstance(n, (ast.Attribute, ast.Name)) and isinstance(n.ctx, ast.Store)
    }
    return out


def _private_uses(mod: str, ours: set[str]) -> Iterator[str]:
    """``obj._name`` where ``_name`` is a private name of another localmem module (one this
    module does not define itself; a library's own, like Textual's ``_on_key`` a widget
    overrides, is the library's business)."""
    path = MODULES[mod]
    own = _defined(mod)
    for node in ast.walk(_tree(mod)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.attr in ours
            and node.attr not in own
        ):
            yield f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}"


def test_no_private_names_of_other_modules() -> None:
    bad = []
    for e, name in _all_edges():
        if name is None or not name.startswith("_") or name.startswith("__"):
            continue
        same = _package_of(e.src) == _package_of(e.dst) and _package_of(e.src) != "localmem"
        if not same:
            bad.append(f"{_where(e)}: imports {name} from {e.dst}")
    ours = {name for mod in MODULES for name in _defined(mod) if name.startswith("_")}
    for mod in MODULES:
        if MODULES[mod].suffix == ".py" and RANK[layer(mod)] >= RANK["records"]:
            bad += _private_uses(mod, ours)
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_faces_use_the_public_api() -> None:
    bad = [
        f"{_where(e)}: {e.src} imports {e.dst}"
        for e, _ in _all_edges()
        if _within(e.src, FACES)
        and not _within(e.dst, FACES)
        and e.dst not in PUBLIC
        and e.dst not in ("localmem.doctor", "localmem.__main__")
    ]
    assert not bad, "faces importing past the public API:\n" + "\n".join(bad)


def test_the_readme_draws_these_layers() -> None:
    """README's "Architecture" diagram names the layers in this order, top to bottom."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Architecture", 1)[1].split("```", 2)[1]
    drawn = [line.split()[0].lower() for line in block.splitlines() if line[:1].isalpha()]
    assert drawn == [name for name, _ in reversed(LAYERS)]
