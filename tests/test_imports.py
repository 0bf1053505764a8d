"""No import cycle between the modules of the installed package.

Every module of fastadapt (with fastadapt.kernels, installed from the
top-level kernels/ folder, and fastadapt.benchmark) is read with ``ast``,
not imported. An edge A -> B is a module-level import in A of B (also inside
module-level ``if`` / ``try`` / ``with`` blocks; an import inside a function
or class body runs later, lazily, and is no edge). Importing ``a.b.c`` also
runs the packages ``a.b`` and ``a`` that are not already A's own packages,
so those are edges too: ``fastadapt.zero`` importing ``fastadapt.torch._zero``
depends on ``fastadapt.torch``'s ``__init__``.
"""
import ast
import importlib
import importlib.util
import os

import pytest

ROOTS = ("fastadapt", "fastadapt.kernels", "fastadapt.benchmark")


def _modules():
    """``{module name: source path}`` of every module under ROOTS, found
    where the installed package's import system finds them."""
    found = {}
    for root in ROOTS:
        spec = importlib.util.find_spec(root)
        assert spec is not None and spec.submodule_search_locations, root
        for top in spec.submodule_search_locations:
            for folder, dirs, files in os.walk(top):
                rel = os.path.relpath(folder, top)
                parts = [] if rel == "." else rel.split(os.sep)
                if parts and not os.path.exists(os.path.join(folder, "__init__.py")):
                    dirs[:] = []
                    continue
                dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
                for name in files:
                    if not name.endswith(".py"):
                        continue
                    stem = name[:-3]
                    dotted = ".".join([root, *parts] + ([] if stem == "__init__" else [stem]))
                    found.setdefault(dotted, os.path.join(folder, name))
    return found


def _top_level_imports(tree):
    """The Import / ImportFrom nodes that run when the module is imported."""
    todo, out = list(tree.body), []
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, None) or ())
            if isinstance(node, ast.Match):
                for case in node.cases:
                    todo.extend(case.body)
    return out


def _targets(node, module, is_package, known):
    """The fastadapt modules an import node makes ``module`` import."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module
    out = [prefix]
    for alias in node.names:            # ``from pkg import submodule``
        if f"{prefix}.{alias.name}" in known:
            out.append(f"{prefix}.{alias.name}")
    return out


def _edges(name, tree, is_package, known):
    """The modules of ``known`` that importing module ``name`` (parsed as
    ``tree``) imports at module level, with the packages that import runs."""
    own = name.split(".")
    own_packages = {".".join(own[:i]) for i in range(1, len(own) + (1 if is_package else 0))}
    edges = set()
    for node in _top_level_imports(tree):
        for target in _targets(node, name, is_package, known):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                step = ".".join(parts[:i])
                if step in known and step not in own_packages and step != name:
                    edges.add(step)
    return edges


def import_graph():
    """``{module: set of fastadapt modules it imports at module level}``."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        graph[name] = _edges(name, tree, os.path.basename(path) == "__init__.py", modules)
    return graph


def find_cycle(graph):
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_every_package_module_is_walked():
    graph = import_graph()
    for name in ("fastadapt", "fastadapt.torch", "fastadapt.zero", "fastadapt.kernels.math",
                 "fastadapt.benchmark._report", "fastadapt.torch._optimizer"):
        assert name in graph, sorted(graph)
    assert "fastadapt.flat" in graph["fastadapt"]
    assert "fastadapt.flat" in graph["fastadapt.torch._bucket"]  # from ..flat import ...


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walk_finds_cycles_through_a_package_and_a_block():
    """The detector itself: a cycle made by a submodule import (through the
    package's __init__) and one inside a module-level try are found; an
    import inside a function is not an edge."""
    source = {
        "p": "from . import a\n",
        "p.a": "try:\n    from .b import x\nexcept ImportError:\n    pass\n",
        "p.b": "def f():\n    from . import a\nimport p.c\n",
        "p.c": "from .d import y\n",
        "p.d": "",
    }
    graph = {name: _edges(name, ast.parse(text), name == "p", source)
             for name, text in source.items()}
    assert graph["p"] == {"p.a"} and graph["p.a"] == {"p.b"} and graph["p.b"] == {"p.c"}
    assert find_cycle(graph) is None
    graph["p.d"] = {"p"}                 # p.d -> p -> p.a -> p.b -> p.c -> p.d
    assert find_cycle(graph) == ["p", "p.a", "p.b", "p.c", "p.d", "p"]


def test_torch_inside_the_fastadapt_torch_package_is_the_real_torch():
    """``fastadapt.torch`` is a package whose modules say ``import torch``:
    an absolute import, so the name is PyTorch, never the package itself."""
    torch = pytest.importorskip("torch")
    for name in sorted(import_graph()):
        if name.startswith("fastadapt.torch.") or name in ("fastadapt.torch", "fastadapt.zero"):
            module = importlib.import_module(name)
            if "torch" in vars(module):
                assert module.torch is torch and hasattr(module.torch, "optim"), name
