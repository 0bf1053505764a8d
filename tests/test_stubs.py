"""The committed ``.pyi`` stubs are what the registry generates, and declare the
modules' public names (``def adam_step``, ``class Adam``, ...) for grep and editors."""
import ast
import importlib
import inspect
import sys

import pytest

import fastadapt
from fastadapt import _stubs


def _module(name):
    if name == "fastadapt.torch":
        pytest.importorskip("torch")
    return importlib.import_module(name)


@pytest.mark.parametrize("name", _stubs.MODULES)
def test_committed_stub_is_generated(name):
    module = _module(name)
    path = _stubs.stub_path(module)
    assert path.exists(), f"{path} is missing: run `{_stubs.COMMAND}`"
    dependency = _stubs.dependency_line(name)
    if dependency and dependency not in path.read_text().splitlines()[:2]:
        pytest.skip(f"{path.name} was generated against another version than the "
                    f"installed one ({dependency.lstrip('# ')})")
    assert path.read_text() == _stubs.render(module), \
        f"{path} is out of date with the registry: run `{_stubs.COMMAND}`"


def _declared(tree):
    """Top-level names a stub declares: name -> its node."""
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign):
            out[node.target.id] = node
        elif isinstance(node, ast.ImportFrom):
            out.update({a.asname: node for a in node.names if a.asname})
    return out


@pytest.mark.parametrize("name", _stubs.MODULES)
def test_stub_declares_every_public_name_with_its_signature(name):
    module = _module(name)
    declared = _declared(ast.parse(_stubs.stub_path(module).read_text()))
    public = [k for k, v in vars(module).items()
              if k in module.__all__ or (not k.startswith("_") and (
                  inspect.isclass(v) or inspect.isfunction(v))
                  and v.__module__ == name)]
    assert set(public) <= set(declared)
    for key in public:
        value, node = getattr(module, key), declared[key]
        if inspect.isclass(value) and isinstance(node, ast.ClassDef):
            assert ast.get_docstring(node) == inspect.cleandoc(value.__doc__), f"{name}.{key}"
            value = value.__init__
            node = next((n for n in node.body if isinstance(n, ast.FunctionDef)
                         and n.name == "__init__"), None)
            if node is None:
                continue
        if isinstance(node, ast.FunctionDef):
            args = node.args
            names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
            names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
            sig = inspect.signature(value).parameters
            assert sorted(names) == sorted(sig), f"{name}.{key}"
            doc = value.__doc__ and inspect.cleandoc(value.__doc__)
            assert ast.get_docstring(node) == (doc or None), f"{name}.{key}"


def test_every_rule_can_be_found_by_grep():
    stubs = {name: _stubs.stub_path(importlib.import_module(name)).read_text()
             for name in ("fastadapt.functional", "fastadapt.optim")}
    for rule in fastadapt.RULES.values():
        assert f"\ndef {rule.name}_step(" in stubs["fastadapt.functional"]
        assert f"\nclass {rule.torch_name}(Optimizer):" in stubs["fastadapt.optim"]


def test_stub_of_a_package_is_its_init():
    import fastadapt.schedules as module
    assert _stubs.stub_path(fastadapt) == _stubs.stub_path(module).parent / "__init__.pyi"


def test_every_module_making_public_names_has_a_stub():
    """A module whose public names are made at import (by exec, type or a loop)
    is one the generator covers, wherever a change moves the making; and no
    stub is left beside a module the generator no longer covers."""
    pytest.importorskip("torch")
    import sys
    import fastadapt.torch  # noqa: F401
    for name, module in list(sys.modules.items()):
        if name.startswith("fastadapt") and getattr(module, "__file__", "").endswith(".py"):
            assert not _stubs.made_at_import(module) or name in _stubs.MODULES, \
                f"{name} makes public names at import: add it to fastadapt._stubs.MODULES"
    covered = {_stubs.stub_path(importlib.import_module(n)) for n in _stubs.MODULES}
    package = _stubs.stub_path(fastadapt).parent
    stale = set(package.rglob("*.pyi")) - covered
    assert not stale, f"stubs of no generated module (delete them): {sorted(map(str, stale))}"


def test_an_optimizers_public_attributes_are_declared():
    """What an instance holds (``opt.param_groups``, ``opt.grad_norm``, ...) is
    declared in its class's stub, so a type checker accepts using it."""
    import numpy as np
    torch = pytest.importorskip("torch")
    import fastadapt.torch as ft
    p = torch.nn.Parameter(torch.zeros(3))
    torchs = set(vars(torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))])))
    for module, opt, theirs in ((fastadapt.optim, fastadapt.Adam([np.zeros(3)]), set()),
                                (ft, ft.Adam([p]), torchs)):
        text = _stubs.stub_path(module).read_text()
        # what a base class from a module without a stub assigns, a type
        # checker reads from that module's source
        bases = {a for c in type(opt).__mro__
                 if c.__module__.startswith("fastadapt.") and c.__module__ != module.__name__
                 for a in _stubs._instance_attributes(sys.modules[c.__module__], c)}
        for key in vars(opt):
            if not key.startswith("_") and key not in theirs:
                assert (f"\n    {key}: " in text or f"\n    def {key}(" in text
                        or key in bases), key


def _private_references(text):
    """The dotted names of ``fastadapt``'s private modules or classes (a
    component starting with ``_``) that a stub's code refers to: in bases,
    annotations and imports; docstrings are prose and not read. A line that
    re-exports a public name from where it is defined (``from
    fastadapt.torch._optimizer import FlatOptimizer as FlatOptimizer``) is
    how a stub declares that name, and passes."""
    def private(dotted):
        parts = dotted.split(".")
        return parts[0] == "fastadapt" and any(p.startswith("_") for p in parts[1:])

    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if private(a.name)]
        elif isinstance(node, ast.ImportFrom):
            found += [f"{node.module}.{a.name}" for a in node.names
                      if private(f"{node.module}.{a.name}")
                      and (a.name.startswith("_") or a.asname != a.name)]
        elif isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Store):
            parts, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name):
                dotted = ".".join([value.id, *reversed(parts)])
                if private(dotted):
                    found.append(dotted)
    return sorted(set(found))


@pytest.mark.parametrize("name", _stubs.MODULES)
def test_stub_names_no_private_module_or_class(name):
    """A stub is the public face of its module: a base or annotation behind a
    private name (``fastadapt._core.WholeStep``) would send an editor's reader
    to a private module, and tie the public stub to a private name."""
    path = _stubs.stub_path(_module(name))
    assert _private_references(path.read_text()) == [], path


def test_the_private_name_check_catches_a_private_base():
    """The check above fails on the stub the generator once wrote."""
    text = ("import fastadapt._core\nimport fastadapt.rules\n"
            "from fastadapt.torch._optimizer import FlatOptimizer as FlatOptimizer\n"
            "from fastadapt._core import WholeStep as Base\n"
            "class Optimizer(fastadapt._core.WholeStep):\n"
            "    rule: fastadapt.rules.Rule\n")
    assert _private_references(text) == ["fastadapt._core", "fastadapt._core.WholeStep"]


def test_a_private_base_is_declared_through_the_public_class():
    """A public class whose base is private and not exported: the base is left
    out and what the class inherits from it (``max_grad_norm`` and its setter,
    the attributes its methods set) is declared on the class itself."""
    import types
    from fastadapt._core import WholeStep

    module = types.ModuleType("fastadapt.optim")
    module.__file__ = fastadapt.optim.__file__
    module.__all__ = ["Optimizer"]
    module.Optimizer = type("Optimizer", (WholeStep,), {"__module__": "fastadapt.optim",
                                                        "__doc__": "A class."})
    text = _stubs.render(module)
    assert _private_references(text) == []
    assert "\nclass Optimizer:\n" in text
    assert "    @property\n    def max_grad_norm(self):" in text
    assert "    @max_grad_norm.setter\n" in text
    assert "    grad_norm: typing.Any" in text and "    step_skipped: typing.Any" in text
