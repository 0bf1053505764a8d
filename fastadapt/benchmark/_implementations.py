"""The implementations the benchmark times, each as a zero-argument ``step()``.

Every builder takes a :class:`~fastadapt.benchmark._configs.Config` and the
problem's ``param`` and ``grad``, copies them into arrays of its own (zero
state, as torch starts) and returns a closure taking one optimizer step, the
way a user of that implementation pays for it: fastadapt's functional step
with an incrementing step count, the NumPy rival, the same-traffic roofline
kernel, and ``torch.optim``'s ``.step()`` on one parameter tensor with
``.grad`` set (single-tensor, foreach and fused paths). A builder that
cannot run raises :class:`Unavailable` with the reason the table prints.
"""
import itertools

import numpy as np

from ..functional import step_for
from ..kernels import roofline
from ._numpy_reference import NUMPY_STEPS, SCRATCH_ARRAYS

#: implementation key -> label in tables and plots
LABELS = {
    "fastadapt": "fastadapt",
    "roofline": "roofline",
    "numpy": "NumPy",
    "numpy_alloc": "NumPy, fresh temporaries",
    "torch_single": "torch single-tensor",
    "torch_foreach": "torch foreach",
    "torch_fused": "torch fused",
}
TORCH_MODES = {"torch_single": {"foreach": False}, "torch_foreach": {"foreach": True},
               "torch_fused": {"fused": True}}
IMPLEMENTATIONS = tuple(LABELS)


class Unavailable(Exception):
    """This implementation cannot run here; ``str(exc)`` says why."""


def import_torch():
    """torch, or Unavailable("torch not installed")."""
    try:
        import torch
    except ImportError:
        raise Unavailable("torch not installed") from None
    return torch


def fastadapt_step(config, param, grad):
    p, g = param.copy(), grad.copy()
    state = config.initial_state(p)
    return _functional_closure(step_for(config.rule), config, p, g, state, {})


def numpy_step(config, param, grad):
    """The NumPy rival with its temporaries allocated once and reused."""
    p, g = param.copy(), grad.copy()
    state = config.initial_state(p)
    scratch = [np.empty_like(p) for _ in range(SCRATCH_ARRAYS)]
    return _functional_closure(NUMPY_STEPS[config.rule_name], config, p, g, state,
                               {"scratch": scratch})


def numpy_alloc_step(config, param, grad):
    """The NumPy rival allocating its temporaries in every call (``np.empty_like``),
    as a step function that keeps no buffers between calls does."""
    p, g = param.copy(), grad.copy()
    state = config.initial_state(p)
    return _functional_closure(NUMPY_STEPS[config.rule_name], config, p, g, state, {})


def _functional_closure(fn, config, p, g, state, extra):
    options = {**config.options, **state, **extra}
    if config.rule.scalar_state:        # NAdam's mu_product, ...: carried step to step
        counter = itertools.count(1)

        def step():
            counter_kw = {"step": next(counter)} if config.rule.takes_step else {}
            options.update(fn(p, g, **counter_kw, **options) or {})
    elif config.rule.takes_step:
        counter = itertools.count(1)

        def step():
            fn(p, g, step=next(counter), **options)
    else:
        def step():
            fn(p, g, **options)
    step.arrays = (p, g, state)
    return step


def roofline_step(config, param, grad):
    p, g = param.copy(), grad.copy()
    state = [np.zeros_like(p) for _ in config.state_names]

    def step():
        roofline.step(p, g, state)
    step.arrays = (p, g, state)
    return step


def torch_optimizer(config, tensors, mode):
    """``torch.optim.<Rule>(tensors, **hyper-parameters, **mode)``, checked by one step.

    Raises Unavailable when torch lacks this path (no fused RMSprop, ...).
    """
    torch = import_torch()
    if not config.rule.in_torch:
        raise Unavailable(f"torch.optim has no {config.rule.torch_name}")
    cls = getattr(torch.optim, config.rule.torch_name)
    flags = TORCH_MODES[mode]
    if config.rule.torch_sparse_grad:    # SparseAdam: one path, no flags
        if mode != "torch_single":
            raise Unavailable(f"no {next(iter(flags))} {cls.__name__} in torch {torch.__version__}")
        flags = {}
    try:
        opt = cls(tensors, **config.torch_kwargs(), **flags)
        opt.step()
    except (TypeError, RuntimeError, ValueError) as exc:
        flag = next(iter(flags))
        raise Unavailable(f"no {flag} {cls.__name__} in torch {torch.__version__}") from exc
    return opt


def torch_step(mode):
    def build(config, param, grad):
        torch = import_torch()
        p = torch.from_numpy(param.copy()).requires_grad_()
        p.grad = torch.from_numpy(grad.copy())
        if config.rule.torch_sparse_grad:   # SparseAdam: every row present
            rows = torch.arange(p.shape[0]).unsqueeze(0)
            p.grad = torch.sparse_coo_tensor(rows, p.grad, p.shape,
                                             check_invariants=True).coalesce()
        opt = torch_optimizer(config, [p], mode)
        step = opt.step
        return step
    build.__name__ = f"{mode}_step"
    return build


BUILDERS = {
    "fastadapt": fastadapt_step,
    "roofline": roofline_step,
    "numpy": numpy_step,
    "numpy_alloc": numpy_alloc_step,
    **{mode: torch_step(mode) for mode in TORCH_MODES},
}


def build_all(config, param, grad, names=IMPLEMENTATIONS):
    """``({name: step}, {name: reason})``: the steps that run and those that cannot."""
    steps, unavailable = {}, {}
    for name in names:
        try:
            steps[name] = BUILDERS[name](config, param, grad)
        except Unavailable as exc:
            unavailable[name] = str(exc)
    return steps, unavailable


# --------------------------------------------------------------------- GPT-2
def gpt2_small_shapes(d=768):
    """The parameter shapes of GPT-2 small (124M), in the order of its state dict.

    wte, wpe, then for each of 12 layers ln_1 (w, b), attn.c_attn (w, b),
    attn.c_proj (w, b), ln_2 (w, b), mlp.c_fc (w, b), mlp.c_proj (w, b), then
    ln_f (w, b): 2 + 12 * 12 + 2 = 148 arrays, 124,439,808 elements. A smaller
    model width ``d`` keeps the 148 arrays (``d=128``: 8,943,488 elements).
    """
    vocab, ctx, layers = 50257, 1024, 12
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,),                      # ln_1
                   (d, 3 * d), (3 * d,),            # attn.c_attn
                   (d, d), (d,),                    # attn.c_proj
                   (d,), (d,),                      # ln_2
                   (d, 4 * d), (4 * d,),            # mlp.c_fc
                   (4 * d, d), (d,)]                # mlp.c_proj
    shapes += [(d,), (d,)]                          # ln_f
    return shapes


def _segments(flat, shapes):
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def gpt2_adam_steps(shapes, flat_param, flat_grad, names):
    """Adam over a model's list of arrays, per implementation.

    ``flat_param`` / ``flat_grad`` hold every array's values concatenated.
    ``names`` is a subset of ``fastadapt_class`` (``fastadapt.Adam``: one
    flat buffer, one kernel call), ``fastadapt_per_array`` (``adam_step``
    called on each array), ``fastadapt_one_array`` (``adam_step`` on one
    array of the model's total size: no model at all), ``torch_fused`` and ``torch_foreach`` (torch's
    Adam over the list of tensors). Returns ``({name: step}, {name: reason})``;
    each builder's arrays are released when its step is.
    """
    steps, unavailable = {}, {}
    for name in names:
        try:
            steps[name] = _GPT2_BUILDERS[name](shapes, flat_param, flat_grad)
        except Unavailable as exc:
            unavailable[name] = str(exc)
    return steps, unavailable


def _gpt2_fastadapt_class(shapes, flat_param, flat_grad):
    try:
        from ..optim import Adam
    except ImportError:
        raise Unavailable("optimizer classes not available") from None
    # np.zeros maps lazily-zeroed pages, so the copy into the flat buffer is cheap
    opt = Adam([np.zeros(s, flat_param.dtype) for s in shapes])
    for view, src in zip(opt.params, _segments(flat_param, shapes)):
        view[...] = src
    for view, src in zip(opt.grads, _segments(flat_grad, shapes)):
        view[...] = src
    step = opt.step
    return step


def _gpt2_fastadapt_per_array(shapes, flat_param, flat_grad):
    from ..functional import adam_step
    params = [a.copy() for a in _segments(flat_param, shapes)]
    grads = [a.copy() for a in _segments(flat_grad, shapes)]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    counter = itertools.count(1)

    def step():
        t = next(counter)
        for p, g, (m, v) in zip(params, grads, moments):
            adam_step(p, g, m, v, step=t)
    step.arrays = (params, grads, moments)
    return step


def _gpt2_fastadapt_one_array(shapes, flat_param, flat_grad):
    """The floor for the class: adam_step on one array of the same total size."""
    from ..functional import adam_step
    param, grad = flat_param.copy(), flat_grad.copy()
    exp_avg, exp_avg_sq = np.zeros_like(param), np.zeros_like(param)
    counter = itertools.count(1)

    def step():
        adam_step(param, grad, exp_avg, exp_avg_sq, step=next(counter))
    step.arrays = (param, grad, exp_avg, exp_avg_sq)
    return step


def _gpt2_torch(mode):
    def build(shapes, flat_param, flat_grad):
        torch = import_torch()
        params = []
        for p, g in zip(_segments(flat_param, shapes), _segments(flat_grad, shapes)):
            t = torch.from_numpy(p.copy()).requires_grad_()
            t.grad = torch.from_numpy(g.copy())
            params.append(t)
        from ._configs import BY_KEY
        return torch_optimizer(BY_KEY["adam"], params, mode).step
    return build


_GPT2_BUILDERS = {
    "fastadapt_class": _gpt2_fastadapt_class,
    "fastadapt_per_array": _gpt2_fastadapt_per_array,
    "fastadapt_one_array": _gpt2_fastadapt_one_array,
    "torch_fused": _gpt2_torch("torch_fused"),
    "torch_foreach": _gpt2_torch("torch_foreach"),
}
GPT2_LABELS = {
    "fastadapt_class": "fastadapt.Adam (one flat buffer)",
    "fastadapt_per_array": "fastadapt.adam_step per array",
    "fastadapt_one_array": "fastadapt.adam_step on one array of the same size",
    "torch_fused": "torch Adam fused",
    "torch_foreach": "torch Adam foreach",
}
