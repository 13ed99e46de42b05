"""The package layering, checked on the source: no import cycles, no upward imports.

    cli -> search -> gate -> {engine, report, train} -> bench -> models -> kernels

with the foundation modules (case, registry, env, synthetic; then spec and store) importable from every layer.
Function-level (lazy) imports count: a lazy import still makes a cycle, it only hides it until run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ssmbench"

# Lower number = lower layer. A module may import its own top-level unit or any unit with a lower rank.
RANKS = {
    "env": -1,  # facts about this machine and environment, from the standard library only: even kernels read them
    "kernels": 0, "case": 0, "registry": 0, "synthetic": 0,
    "spec": 1, "store": 1,
    "options": 1.2,  # model options checked against the config dataclasses (spec, registry)
    "schema": 1.5,  # the typed input schema: built on spec's parsers, below every feature layer
    "contention": 1.5,  # per-case machine-load metrics (store's Metric), read by engine, report and gate
    "models": 2,
    "bench": 3,
    "engine": 4, "report": 4, "train": 4,
    "gate": 5,
    "search": 6,
    "cli": 7,
    "__main__": 8, "__init__": 8,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit(module: str) -> str:
    """The layering unit of a module: its first component below ``ssmbench`` (``ssmbench`` itself: __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, module: str) -> set[str]:
    """Every ssmbench module imported anywhere in the file (top level or inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ssmbench"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "ssmbench":
                continue
            found.add(target)
            # "from ssmbench.pkg import mod" imports the submodule when one exists
            for a in node.names:
                candidate = f"{target}.{a.name}"
                if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").is_file() or \
                        (PACKAGE.parent / candidate.replace(".", "/") / "__init__.py").is_file():
                    found.add(candidate)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        mod = module_name(path)
        graph[mod] = {m for m in imports_of(path, mod) if m != mod}
    return graph


def test_every_unit_has_a_rank():
    units = {unit(m) for m in import_graph()}
    assert units <= set(RANKS), f"add these to RANKS (and to docs/architecture.md): {sorted(units - set(RANKS))}"


def test_no_upward_imports():
    bad = []
    for mod, targets in import_graph().items():
        for t in targets:
            if t == "ssmbench" or unit(t) == unit(mod):
                continue
            if RANKS[unit(t)] >= RANKS[unit(mod)]:
                bad.append(f"{mod} -> {t}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = import_graph()
    # Edges to names that are not modules (attributes) are dropped, and so are edges to a module's own ancestor
    # packages: Python imports those before the module anyway, so "from ssmbench.cli import sweep" inside
    # ssmbench.cli.app is not a cycle.
    edges = {m: {t for t in ts if t in graph and not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("source, expected", [
    ("from ssmbench.bench import speed\n", {"ssmbench.bench", "ssmbench.bench.speed"}),
    ("def f():\n    from ssmbench.models.blocks import MLP\n", {"ssmbench.models.blocks"}),
    ("import ssmbench.store\n", {"ssmbench.store"}),
    ("import os\nfrom torch import nn\n", set()),
])
def test_imports_are_found_at_any_depth(tmp_path, source, expected):
    path = PACKAGE / "_layering_probe.py"
    try:
        path.write_text(source)
        assert imports_of(path, "ssmbench._layering_probe") == expected
    finally:
        path.unlink()
