"""The library's import graph: no cycle (module-level or function-local imports alike); no paper package imports
another (Gaur et al.'s stages only their predecessors); the shared kernels import no paper."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "pipeline_lib"
# One package per paper; Gaur et al.'s pipeline is three of them, in the order its stages run.
PAPERS = ("hpf", "sfnet", "weakalign", "fcss", "manifold", "pseudo_flow", "siamese")
GAUR_CHAIN = ("manifold", "pseudo_flow", "siamese")


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Modules of pipeline_lib imported anywhere in ``path`` (``from .x import y`` counts as x.y when x.y is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                if f"{target}.{a.name}" in modules:
                    out.add(f"{target}.{a.name}")
                elif target in modules:
                    out.add(target)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_relative_and_type_checking_imports():
    g = import_graph()
    assert "pipeline_lib.stage_io" in g["pipeline_lib.methods.stage"]
    assert "pipeline_lib.training" in g["pipeline_lib.stage_io"]
    assert "pipeline_lib.manifold.kfd" in g["pipeline_lib.manifold"]  # under `if TYPE_CHECKING:`


def test_no_function_local_import_of_the_library():
    """A function-local import of our own modules is how a cycle hides: there is none."""
    local = []
    for path in sorted(PKG.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local += [f"{path.name}:{n.lineno}" for n in ast.walk(fn)
                          if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("pipeline_lib"))]
    assert local == []


def test_a_planted_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_library():
    assert cycles(import_graph()) == []


# The shared library every paper builds on: none of it may import a paper (or the stages above the papers).
GROUND_FLOOR = ("stage_io", "protocols", "config", "atomic", "provenance", "training", "pair_prediction", "backbones",
                "geometry", "kernels", "datasets", "features", "evaluation")
ABOVE_PAPERS = ("methods.stage", "datasets.stage", "features.stage", "evaluation.stage")


def test_the_ground_floor_imports_no_paper_and_no_stage():
    graph = import_graph()
    for module, deps in graph.items():
        rest = module.removeprefix("pipeline_lib.")
        if rest.split(".")[0] not in GROUND_FLOOR or rest in ABOVE_PAPERS:
            continue
        bad = [d for d in deps if d.split(".")[1] in PAPERS or d.removeprefix("pipeline_lib.") in ABOVE_PAPERS]
        assert bad == [], (module, bad)


def paper_of(module: str) -> str | None:
    """The paper package a module belongs to (None for the shared library)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PAPERS else None


def cross_paper_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) for every import of one paper package by another, except a stage of Gaur et al.'s
    chain importing an earlier stage."""
    bad = []
    for module, deps in graph.items():
        src = paper_of(module)
        for dep in deps:
            dst = paper_of(dep)
            if src is None or dst is None or src == dst:
                continue
            if src in GAUR_CHAIN and dst in GAUR_CHAIN and GAUR_CHAIN.index(dst) < GAUR_CHAIN.index(src):
                continue
            bad.append((module, dep))
    return sorted(bad)


def test_a_planted_cross_paper_import_is_found():
    graph = {"pipeline_lib.siamese.model": {"pipeline_lib.sfnet.model", "pipeline_lib.kernels.correlation"},
             "pipeline_lib.siamese.data": {"pipeline_lib.pseudo_flow", "pipeline_lib.manifold.stage"},  # in order
             "pipeline_lib.pseudo_flow.stage": {"pipeline_lib.manifold.stage", "pipeline_lib.siamese.data"},
             "pipeline_lib.hpf.matcher": {"pipeline_lib.hpf.rhm", "pipeline_lib.methods"},
             "pipeline_lib.methods.stage": {"pipeline_lib.hpf.stage", "pipeline_lib.sfnet"}}  # not a paper: may
    assert cross_paper_imports(graph) == [("pipeline_lib.pseudo_flow.stage", "pipeline_lib.siamese.data"),
                                          ("pipeline_lib.siamese.model", "pipeline_lib.sfnet.model")]


def test_no_paper_package_imports_another():
    graph = import_graph()
    assert {m.split(".")[1] for m in graph if paper_of(m)} == set(PAPERS)  # every paper package is seen
    assert cross_paper_imports(graph) == []


def test_the_kernels_import_nothing_but_kernels():
    graph = import_graph()
    kernels = [m for m in graph if m.startswith("pipeline_lib.kernels")]
    assert len(kernels) > 1
    assert {m: sorted(d for d in graph[m] if not d.startswith("pipeline_lib.kernels")) for m in kernels} == \
        {m: [] for m in kernels}
