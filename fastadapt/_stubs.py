"""Type stubs (``.pyi``) of the modules whose public names are made at import.

``fastadapt.<name>_step``, the NumPy classes (``fastadapt.Adam``, ...) and the
torch classes (``fastadapt.torch.Adam``, ...) are derived from the registry
(:mod:`fastadapt.rules`) when their module is imported, so no source file
holds ``def adam_step`` or ``class Adam``. Their stubs do: one generated file
beside each such module, holding every public name of the module (a stub
replaces its module for type checkers and editors) with its signature and
docstring, read from the module as imported. ``grep`` and an editor's
go-to-definition find the names there.

A stub names no private module or class (none of its dotted components
starts with ``_``) except in the lines that re-export a public name from
where it is defined: a class found only behind a private name (the NumPy
classes' base ``fastadapt._core.WholeStep``) is left out of the bases and
its public members are declared on the public class that inherits them; a
private-module class the module re-exports is called by its public name.

Regenerate after changing a rule or any of these modules' public names
(``tests/test_stubs.py`` fails until the files match)::

    python -m fastadapt._stubs
"""
import ast
import importlib
import inspect
import math
import sys
import types
from pathlib import Path

#: The modules that derive public names from the registry.
MODULES = ("fastadapt.functional", "fastadapt.optim", "fastadapt.torch")

#: Modules whose stub also depends on another package's version (the torch
#: classes take ``torch.optim``'s signatures and defaults): module -> package.
DEPENDS_ON = {"fastadapt.torch": "torch"}

COMMAND = "python -m fastadapt._stubs"
_HEADER = f"# Generated from the registry by `{COMMAND}`; do not edit.\n"


def dependency_line(name):
    """The stub's line naming the version of the package it depends on, or None."""
    package = DEPENDS_ON.get(name)
    if package is None:
        return None
    version = importlib.import_module(package).__version__.split("+")[0]
    return f"# Signatures from {package} {version}."


def stub_path(module):
    """Where ``module``'s stub lives: its source file with ``.pyi`` (a package's
    ``__init__.pyi``)."""
    return Path(module.__file__).with_suffix(".pyi")


def render(module):
    """The stub text of ``module`` (imported)."""
    return _Stub(module).text()


def write(names=MODULES, out=print):
    """Write the stub of each module in ``names``; returns the paths changed."""
    changed = []
    for name in names:
        module = importlib.import_module(name)
        path, text = stub_path(module), render(module)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
            out(f"wrote {path}")
    return changed


def made_at_import(module):
    """The public classes and functions of ``module`` that no ``def`` or
    ``class`` of its source declares (made by ``exec``, ``type``, a loop)."""
    here = _defined_here(module)
    return [k for k, v in vars(module).items()
            if not k.startswith("_") and k not in here
            and (inspect.isclass(v) or inspect.isroutine(v))
            and getattr(v, "__module__", None) == module.__name__]


# ----------------------------------------------------------------- rendering
def _defined_here(module):
    """Top-level names the module's source assigns or defines (not imports)."""
    tree = ast.parse(Path(module.__file__).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _instance_attributes(module, cls):
    """Public attributes the methods of ``cls`` (a top-level class of
    ``module``'s source) assign on ``self``, in order of appearance."""
    tree = ast.parse(Path(module.__file__).read_text())
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef)
                 and n.name == cls.__name__), None)
    names = []
    for fn in (node.body if node is not None else ()):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for n in ast.walk(fn):
            if (isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                    and isinstance(n.value, ast.Name) and n.value.id == "self"
                    and not n.attr.startswith("_") and n.attr not in names):
                names.append(n.attr)
    return names


def is_private(obj):
    """Whether class ``obj`` is reachable only through a private name (a
    dotted component of its module or qualified name starting with ``_``)."""
    return any(part.startswith("_") for part in
               (*obj.__module__.split("."), *obj.__qualname__.split(".")))


def _public_home(obj):
    """The most specific public fastadapt module that exports class ``obj``
    defined in a private one (``fastadapt.rules`` for ``fastadapt._rule.Rule``),
    or None."""
    homes = [name for name, m in list(sys.modules.items())
             if (name == "fastadapt" or name.startswith("fastadapt."))
             and not any(part.startswith("_") for part in name.split("."))
             and getattr(m, obj.__qualname__, None) is obj]
    return max(homes, key=lambda name: (name.count("."), name), default=None)


def _literal(value):
    """Source of a default simple enough to show in a stub, else ``...``."""
    if value is None or isinstance(value, (bool, str)):
        return repr(value)
    if isinstance(value, (int, float)) and type(value) in (int, float):
        return repr(value) if math.isfinite(value) else "..."
    if type(value) is tuple:
        parts = [_literal(v) for v in value]
        if "..." not in parts:
            return f"({', '.join(parts)}{',' if len(parts) == 1 else ''})"
    return "..."


def _parameters(fn):
    """The parameters of ``fn`` as stub source, one string each."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return ["*args", "**kwargs"]
    out, star = [], False
    for p in signature.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        elif p.kind is p.VAR_POSITIONAL:
            star = True
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        default = "" if p.default is p.empty else f"={_literal(p.default)}"
        out.append(f"{prefix}{p.name}{default}")
        if p.kind is p.POSITIONAL_ONLY and (
                len(out) == len(signature.parameters) or next(
                    iter(list(signature.parameters.values())[len(out):])).kind
                is not p.POSITIONAL_ONLY):
            out.append("/")
    return out


def _def_line(indent, key, parameters, width=99):
    """``def key(...):``, its parameters wrapped to ``width`` columns."""
    line = f"{indent}def {key}({', '.join(parameters)}):"
    if len(line) <= width:
        return [line]
    lines, current = [f"{indent}def {key}("], indent + " " * 8
    for i, p in enumerate(parameters):
        p += "):" if i == len(parameters) - 1 else ","
        if current.strip() and len(current) + 1 + len(p) > width:
            lines.append(current)
            current = indent + " " * 8
        current += (" " if current.strip() else "") + p
    return lines + [current]


def _docstring(doc, indent):
    if not doc:
        return []
    doc = inspect.cleandoc(doc).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = doc.splitlines()
    body = [f'{indent}"""{lines[0]}'] + [f"{indent}{line}" if line else ""
                                         for line in lines[1:]]
    if len(lines) == 1:
        return [body[0] + '"""']
    return body + [f'{indent}"""']


class _Stub:
    def __init__(self, module):
        self.module = module
        self.imports = set()

    def text(self):
        body = self._body()
        head = [_HEADER.rstrip("\n")]
        dependency = dependency_line(self.module.__name__)
        if dependency:
            head.append(dependency)
        head += _docstring(self.module.__doc__, "")
        head += sorted(f"import {m}" for m in self.imports)
        return "\n".join(head) + "\n\n" + body

    def _name_of(self, obj):
        """How the stub refers to class ``obj``: the module's own public name
        for a class it re-exports from a private module."""
        if obj.__module__ == "builtins":
            return obj.__qualname__
        if obj.__module__ == self.module.__name__:
            return obj.__qualname__
        if is_private(obj):
            exported = self._exported_name(obj)
            if exported is not None:
                return exported
            home = _public_home(obj)
            if home is not None:
                self.imports.add(home)
                return f"{home}.{obj.__qualname__}"
        self.imports.add(obj.__module__)
        return f"{obj.__module__}.{obj.__qualname__}"

    def _exported_name(self, obj):
        """The name under which the module exports ``obj`` (in its ``__all__``,
        so the stub declares it too), or None."""
        exported = getattr(self.module, "__all__", ())
        return next((k for k, v in vars(self.module).items()
                     if v is obj and k in exported), None)

    def _hidden(self, cls):
        """The classes of ``cls``'s MRO that a stub cannot name (private and not
        re-exported by the module), whose public members it declares on
        ``cls``: those behind the bases it leaves out."""
        hidden = []
        for base in cls.__bases__:
            if base is object or not is_private(base) or self._exported_name(base):
                continue
            hidden += [c for c in base.__mro__ if c is not object and c not in hidden
                       and is_private(c) and not self._exported_name(c)]
        return hidden

    def _type_of(self, value):
        if value is None:           # set by subclasses (a class's ``rule``)
            self.imports.add("typing")
            return "typing.Any"
        return self._name_of(type(value))

    def _body(self):
        mod = self.module
        name = mod.__name__
        exported = list(getattr(mod, "__all__", ()))
        here = _defined_here(mod)
        lines = []
        if hasattr(mod, "__all__"):
            lines += ["__all__ = ["] + [f"    {n!r}," for n in exported] + ["]", ""]
        for key, value in vars(mod).items():
            if key.startswith("_") or isinstance(value, types.ModuleType):
                continue
            made_here = getattr(value, "__module__", None) == name and (
                inspect.isclass(value) or inspect.isroutine(value))
            if not (key in here or made_here or key in exported):
                continue
            origin = getattr(value, "__module__", None)
            if (key not in here and not made_here and origin
                    and (inspect.isclass(value) or inspect.isroutine(value))):
                # re-exported from another module
                lines += [f"from {origin} import {value.__name__} as {key}", ""]
            elif inspect.isclass(value):
                lines += self._class(key, value, "") + [""]
            elif inspect.isroutine(value):
                lines += self._function(key, value, "") + [""]
            else:
                lines += [f"{key}: {self._type_of(value)}", ""]
        return "\n".join(lines).rstrip("\n") + "\n"

    def _function(self, key, fn, indent, decorator=None):
        out = [f"{indent}@{decorator}"] if decorator else []
        doc = _docstring(fn.__doc__, indent + "    ")
        head = _def_line(indent, key, _parameters(fn))
        if doc:
            return out + head + doc + [f"{indent}    ..."]
        return out + head[:-1] + [head[-1] + " ..."]

    def _class(self, key, cls, indent):
        hidden = self._hidden(cls)
        bases = [self._name_of(b) for b in cls.__bases__
                 if b is not object and b not in hidden]
        out = [f"{indent}class {key}({', '.join(bases)}):" if bases
               else f"{indent}class {key}:"]
        inner = indent + "    "
        members = _docstring(cls.__doc__, inner)
        members += self._members(vars(cls), inner)
        for base in hidden:     # what cls inherits from the bases left out
            members += self._members({a: v for a, v in vars(base).items()
                                      if not any(a in vars(c) for c in cls.__mro__
                                                 if c not in hidden)}, inner)
        if cls.__module__ == self.module.__name__ and not indent:
            inherited = {a for c in cls.__mro__ for a in vars(c)}
            sources = [(self.module, cls)] + [(sys.modules[c.__module__], c) for c in hidden]
            declared = set()
            for module, owner in sources:
                for attr in _instance_attributes(module, owner):
                    if attr not in inherited and attr not in declared:
                        declared.add(attr)
                        self.imports.add("typing")
                        members.append(f"{inner}{attr}: typing.Any")
        return out + (members or [f"{inner}..."])

    def _members(self, namespace, inner):
        """The stub lines of a class's members ``namespace`` (its ``vars``)."""
        members = []
        for attr, raw in namespace.items():
            if getattr(raw, "hooked", False):
                continue     # torch.optim wraps a class's step at its first instance
            public = not attr.startswith("_")
            dunder = attr.startswith("__") and attr.endswith("__")
            if isinstance(raw, staticmethod):
                if public or dunder:
                    members += self._function(attr, raw.__func__, inner, "staticmethod")
            elif isinstance(raw, classmethod):
                if public or dunder:
                    members += self._function(attr, raw.__func__, inner, "classmethod")
            elif isinstance(raw, property):
                if public:
                    members += self._function(attr, raw.fget, inner, "property")
                    if raw.fset is not None:
                        members += [f"{inner}@{attr}.setter",
                                    f"{inner}def {attr}(self, value): ..."]
            elif inspect.isclass(raw):
                if public:
                    members += self._class(attr, raw, inner)
            elif inspect.isroutine(raw):
                if public or (dunder and attr != "__init_subclass__"):
                    members += self._function(attr, raw, inner)
            elif public:
                members.append(f"{inner}{attr}: {self._type_of(raw)}")
        return members


def main(argv=None):
    """``python -m fastadapt._stubs``: write the stubs (of the modules named, or all)."""
    names = list(argv if argv is not None else sys.argv[1:]) or list(MODULES)
    changed = write(names)
    if not changed:
        print("stubs up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
