"""Row updates from sparse gradients: only the rows present are read and written.

A sparse gradient (``nn.Embedding(sparse=True)``) arrives as row indices and
a ``(nnz, row_size)`` block of values; the parameter and its state are 2-D
views ``(rows, row_size)`` of flat buffers. Each kernel runs ``prange`` over
groups of entries that share a row, so no two threads touch one row; a
serial twin runs small gradients (``cpu.SERIAL_BELOW`` values), as the dense
drivers do.

The arithmetic is torch.optim's sparse path, to the bit where torch rounds
correctly: ``param.add_(sparse, alpha=a)`` is one fused multiply-add per value
(``fma(a, v, p)``, measured), applied entry by entry in the order the
gradient holds them when its indices repeat (SGD does not coalesce);
Adagrad and SparseAdam coalesce first (``torch.Tensor.coalesce``, by the
caller: its summation order is torch's own) and add their state updates with
alpha 1, which is exact without fusing. SparseAdam's element math is the
registry's (``kernels/math.py``); the others' is written here because it is
not their dense update's.
"""
from math import sqrt

from numba import njit, prange, types
from numba.extending import intrinsic

from . import math as _math
from .cpu import Driver

if __name__ != "fastadapt.kernels.sparse":
    # as in cpu.py: Numba's disk cache records the module name
    raise ImportError(f"import this module as fastadapt.kernels.sparse, not {__name__}")


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's ``llvm.fma``), as torch's axpy computes it."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return a(a, b, c), codegen


_elem = _math.compile_with(njit(inline="always", error_model="numpy"),
                           _math.SCALAR_VOCABULARY, names=("sparse_adam",))
_sparse_adam_elem = _elem.sparse_adam


def sgd_rows(param, rows, order, starts, values, neg_lr, grad_sign):
    """SGD without momentum: ``p = fma(-lr, g, p)`` for every entry, those of
    one row in the gradient's order. ``order`` lists the entries grouped by
    row (stable), group ``k`` being ``order[starts[k]:starts[k + 1]]`` of row
    ``rows[order[starts[k]]]``."""
    width = values.shape[1]
    for k in prange(starts.shape[0] - 1):
        row = rows[order[starts[k]]]
        for e in range(starts[k], starts[k + 1]):
            entry = order[e]
            for c in range(width):
                param[row, c] = fma(neg_lr, values[entry, c] * grad_sign, param[row, c])


def adagrad_rows(param, state_sum, rows, values, neg_clr, eps, grad_sign):
    """Adagrad on a coalesced gradient: ``sum += g * g``; ``p = fma(-clr, g /
    (sqrt(sum) + eps), p)``."""
    width = values.shape[1]
    for k in prange(rows.shape[0]):
        row = rows[k]
        for c in range(width):
            g = values[k, c] * grad_sign
            s = state_sum[row, c] + g * g
            state_sum[row, c] = s
            param[row, c] = fma(neg_clr, g / (sqrt(s) + eps), param[row, c])


def sparse_adam_rows(param, exp_avg, exp_avg_sq, rows, values, grad_sign, one_minus_beta1,
                     one_minus_beta2, eps, neg_step_size):
    """SparseAdam on a coalesced gradient: the registry's element math per value."""
    width = values.shape[1]
    for k in prange(rows.shape[0]):
        row = rows[k]
        for c in range(width):
            p, m, v = _sparse_adam_elem(param[row, c], values[k, c], exp_avg[row, c],
                                        exp_avg_sq[row, c], grad_sign, one_minus_beta1,
                                        one_minus_beta2, eps, neg_step_size)
            param[row, c], exp_avg[row, c], exp_avg_sq[row, c] = p, m, v


#: Each row kernel, parallel and serial (``cpu.Driver``).
DRIVERS = {"sgd": Driver(sgd_rows), "adagrad": Driver(adagrad_rows),
           "sparse_adam": Driver(sparse_adam_rows)}
