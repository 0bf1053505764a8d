"""The optimizer classes derived from the rule registry: one builder of a
class from a signature, and the NumPy face's signatures and docstrings."""
import functools
import inspect

from . import _args
from ._options import STORAGE_DOC, STORAGE_OPTIONS

_P = inspect.Parameter

#: The docstring paragraph of ``max_grad_norm``, a keyword of every class.
MAX_GRAD_NORM_DOC = ("Clip by the global gradient norm over all groups, as "
                     "``torch.nn.utils.clip_grad_norm_``")


def derive_class(name, base, signature, construct, namespace, module):
    """A subclass ``name`` of ``base`` whose ``__init__`` takes ``signature``
    (``self`` and ``params`` first): it binds the call to the signature (so
    defaults apply and a wrong argument raises TypeError, as a written-out
    ``def`` would), then calls ``construct(self, params, arguments)`` with the
    other arguments as a dict. ``namespace`` holds the other class attributes
    (``__doc__`` included); the class and its ``__init__`` belong to ``module``."""
    def __init__(self, params, *args, **kwargs):
        bound = signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"], arguments["params"]
        construct(self, params, arguments)

    __init__.__signature__ = signature
    __init__.__qualname__ = f"{name}.__init__"
    __init__.__module__ = module
    return type(name, (base,), {**namespace, "__init__": __init__, "__module__": module,
                                "__qualname__": name})


def takes_max_grad_norm(init):
    """For a hand-written subclass's ``__init__``: ``init`` with one more keyword, ``max_grad_norm=None``, checked before
    ``init`` runs and set after it (so every optimizer class takes it without
    repeating it in its signature). An ``init`` that already takes it, by name
    or through ``**kwargs`` passed on to the base class, is returned as is."""
    signature = inspect.signature(init)
    if "max_grad_norm" in signature.parameters or any(
            p.kind == inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return init

    @functools.wraps(init)
    def __init__(self, *args, max_grad_norm=None, **kwargs):
        max_grad_norm = _args.max_grad_norm(max_grad_norm)
        init(self, *args, **kwargs)
        if max_grad_norm is not None:
            self.max_grad_norm = max_grad_norm

    extra = inspect.Parameter("max_grad_norm", inspect.Parameter.KEYWORD_ONLY, default=None)
    __init__.__signature__ = signature.replace(
        parameters=[*signature.parameters.values(), extra])
    return __init__


def storage_parameters():
    """The storage options and ``max_grad_norm``, keyword-only, as every
    class's signature ends."""
    return [*(_P(k, _P.KEYWORD_ONLY, default=v) for k, v in STORAGE_OPTIONS.items()),
            _P("max_grad_norm", _P.KEYWORD_ONLY, default=None)]


def numpy_signature(rule):
    """The NumPy face's constructor signature for ``rule``: torch's names,
    order and defaults, then the storage options and ``max_grad_norm``."""
    params = [_P("self", _P.POSITIONAL_OR_KEYWORD), _P("params", _P.POSITIONAL_OR_KEYWORD)]
    params += [_P(h.name, _P.POSITIONAL_OR_KEYWORD, default=h.default)
               for h in rule.hyper if not h.keyword]
    params += [_P(h.name, _P.KEYWORD_ONLY, default=h.default) for h in rule.hyper if h.keyword]
    return inspect.Signature(params + storage_parameters())


def numpy_class(rule, base, module):
    """The NumPy face's class of ``rule``: a subclass of ``base`` (the generic
    optimizer, which takes the hyper-parameters and options as keywords)."""
    def construct(self, params, arguments):
        base.__init__(self, params, **arguments)
    return derive_class(rule.torch_name, base, numpy_signature(rule), construct,
                        {"rule": rule, "state_init": rule.state_init,
                         "__doc__": numpy_docstring(rule)}, module)


def numpy_docstring(rule):
    """The NumPy face's class docstring of ``rule``: its summary, pseudo-code,
    state and parameters, from the registry."""
    lines = [f"{rule.summary}; "
             + (f"torch.optim.{rule.torch_name}." if rule.in_torch else "not in torch.optim."),
             "", "Each step of a group (``step`` counts them from 1), elementwise::", ""]
    lines += ["    " + line for line in rule.pseudocode.splitlines()]
    state = ", ".join(f"``{s.name}``" + (f" (when {s.when_doc})" if s.when is not None else "")
                      + (f" (starts at ``{s.init}``)" if s.init else "")
                      for s in rule.state_specs)
    lines += ["", f"State (zeros unless said): {state}."]
    if rule.scalar_state:
        names = ", ".join(f"``{s.name}``" for s in rule.scalar_state)
        lines += [f"Scalar state, per group: {names} (in :attr:`Optimizer.scalar_state` and "
                  "the checkpoint)."]
    lines += ["", "Parameters", "----------",
              "params : array, list of arrays or list of parameter-group dicts",
              "    Copied into flat buffers; use ``opt.params`` afterwards (see "
              ":class:`Optimizer`)."]
    for h in rule.hyper:
        kind = "float or schedule" if h.name == "lr" else \
            {"Real": "float", "Pair": "(float, float)", "Flag": "bool"}[type(h).__name__]
        lines.append(f"{h.name} : {kind}, default {h.default!r} ({h.describe()})")
        if h.doc:
            lines.append(f"    {h.doc[:1].upper() + h.doc[1:]}.")
    lines += [f"{', '.join(STORAGE_OPTIONS)} : keyword-only",
              f"    {STORAGE_DOC}; see :class:`Optimizer`."]
    lines += ["max_grad_norm : float, optional, keyword-only",
              f"    {MAX_GRAD_NORM_DOC} (see :meth:`Optimizer.step`)."]
    return "\n".join(lines) + "\n"
