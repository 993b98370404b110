"""The house has no import cycle: every import of ``squid_monai`` and ``pipelines`` (module
level and inside functions), read with ``ast``, makes a graph with no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("squid_monai", "pipelines")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that importing ``module`` runs: each imported module, and the packages
    above it that are not already being imported above ``module`` itself."""
    is_package = path.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    own_ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    targets = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if candidate in modules and candidate != module and candidate not in own_ancestors:
                targets.add(candidate)
    return targets


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_graph_sees_the_package_structure():
    modules = _modules()
    graph = {m: _imported(m, p, modules) for m, p in modules.items()}
    assert "squid_monai.scoring.scorer" in graph["squid_monai.scoring"]
    assert "squid_monai.artifact" in graph["squid_monai.loading"]
    assert "squid_monai.scoring" in graph["pipelines.operators.scoring"]


def test_no_import_cycle():
    modules = _modules()
    graph = {m: _imported(m, p, modules) for m, p in modules.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_store_location_is_at_the_bottom():
    modules = _modules()
    assert _imported("squid_monai.tracking", modules["squid_monai.tracking"], modules) == set()
    assert (
        _imported("squid_monai.methods.base", modules["squid_monai.methods.base"], modules) == set()
    )


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imported(m, p, modules) for m, p in modules.items()}


FAMILIES = "squid_monai.methods."
#: the layers below the families: they never import a family, the family registry or an adapter
BELOW_THE_FAMILIES = (
    "squid_monai.artifact",
    "squid_monai.scoring",
    "squid_monai.engines",
    "squid_monai.nn",
    "squid_monai.transforms",
    "squid_monai.data",
    "squid_monai.tracking",
    "squid_monai.metrics",
)
ABOVE_THE_FAMILIES = (
    "squid_monai.methods",
    "squid_monai.loading",
    "squid_monai.workflow",
    "squid_monai.inference",
    "squid_monai.evaluation",
    "squid_monai.export",
    "squid_monai.mlflow_model",
    "squid_monai.serving",
    "pipelines",
)


def _family_of(module: str) -> str | None:
    """``squid_monai.methods.<name>...`` -> ``<name>`` (``base`` is not a family)."""
    if not module.startswith(FAMILIES):
        return None
    name = module[len(FAMILIES) :].split(".")[0]
    return None if name == "base" else name


def _internal_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a family's internals (``squid_monai.methods.<name>.<module>``) from a module
    outside ``methods/<name>/``: everything else sees a family only through its package."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if _family_of(target) and target.count(".") > 2 and _family_of(module) != _family_of(target)
    )


def test_no_module_outside_a_family_imports_its_internals():
    assert _internal_imports(_graph()) == []


def test_the_internals_check_can_fail():
    graph = {
        "squid_monai.evaluation": {"squid_monai.methods.squid.scorer"},
        "squid_monai.methods.memae.networks": {"squid_monai.methods.autoencoder"},
        "squid_monai.methods.squid.trainer": {"squid_monai.methods.squid.losses"},
    }
    assert _internal_imports(graph) == [
        "squid_monai.evaluation -> squid_monai.methods.squid.scorer"
    ]


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_no_upward_arrow_below_the_families():
    """The artifact, scoring, engines, blocks, transforms and data never reach up into the
    families, the family registry or an adapter (at module level or inside a function)."""
    graph = _graph()
    upward = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if _under(m, BELOW_THE_FAMILIES)
        for t in targets
        if _under(t, ABOVE_THE_FAMILIES)
    )
    assert upward == []
    assert (
        "squid_monai.methods.base" in graph["squid_monai.loading"]
    )  # the recipe meets its family up there


#: the adapters: each turns a trained model folder into one product, beside the others
ADAPTERS = (
    "squid_monai.inference",
    "squid_monai.export",
    "squid_monai.mlflow_model",
    "squid_monai.serving",
)


def test_the_adapters_stand_beside_the_training_wiring():
    """No adapter imports the training wiring (``workflow``): what they share with it (the
    data source, the bundle folder) lives below, in ``squid_monai.data.sources``."""
    graph = _graph()
    assert all("squid_monai.workflow" not in graph[a] for a in ADAPTERS)
    assert "squid_monai.data.sources" in graph["squid_monai.export"]
