"""Slow, obviously-correct float64 references for every functional step.

Written from torch.optim's documented formulas (its pseudo-code; the Lion paper
for Lion, which torch lacks), not
from ``kernels/math.py``: each function upcasts everything to float64, applies
the textbook update with whole-array NumPy operations and writes the results
back into the caller's arrays (rounding once to their dtype). The signatures
match ``fastadapt``'s functional API, so the tests can drive either through
one loop. No torch needed.
"""
import numpy as np


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _unscaled(grad, grad_scale):
    return grad if grad_scale is None else grad / grad_scale


def _direction(param, grad, weight_decay, maximize):
    g = -grad if maximize else grad
    return g + weight_decay * param


def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, betas, eps,
          weight_decay, amsgrad, maximize, decoupled):
    beta1, beta2 = betas
    p, grad, m, v = _f64(param, grad, exp_avg, exp_avg_sq)
    if decoupled:                       # AdamW: shrink the parameter, no L2 term
        p = p * (1.0 - lr * weight_decay)
        g = _direction(p, grad, 0.0, maximize)
    else:                               # Adam: L2 penalty folded into the gradient
        g = _direction(p, grad, weight_decay, maximize)
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g ** 2
    if amsgrad:
        second = np.maximum(np.asarray(max_exp_avg_sq, np.float64), v)
        max_exp_avg_sq[...] = second
    else:
        second = v
    m_hat = m / (1.0 - beta1 ** step)
    v_hat = second / (1.0 - beta2 ** step)
    # eps outside the square root, added to the bias-corrected sqrt(v): torch's placement
    param[...] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    exp_avg[...], exp_avg_sq[...] = m, v


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999),
              eps=1e-8, weight_decay=0.0, amsgrad=False, max_exp_avg_sq=None,
              maximize=False):
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, betas, eps,
          weight_decay, amsgrad, maximize, decoupled=False)


def adamw_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999),
               eps=1e-8, weight_decay=1e-2, amsgrad=False, max_exp_avg_sq=None,
               maximize=False):
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, betas, eps,
          weight_decay, amsgrad, maximize, decoupled=True)


def sgd_step(param, grad, momentum_buffer=None, *, step, lr=1e-3, momentum=0.0,
             dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False):
    p, grad = _f64(param, grad)
    g = _direction(p, grad, weight_decay, maximize)
    if momentum != 0:
        if step == 1:
            buf = g.copy()
        else:
            buf = momentum * np.asarray(momentum_buffer, np.float64) + (1.0 - dampening) * g
        momentum_buffer[...] = buf
        g = g + momentum * buf if nesterov else buf
    param[...] = p - lr * g


def rmsprop_step(param, grad, square_avg, *, lr=1e-2, alpha=0.99, eps=1e-8,
                 weight_decay=0.0, momentum=0.0, momentum_buffer=None, centered=False,
                 grad_avg=None, maximize=False):
    p, grad, v = _f64(param, grad, square_avg)
    g = _direction(p, grad, weight_decay, maximize)
    v = alpha * v + (1.0 - alpha) * g ** 2
    square_avg[...] = v
    if centered:
        mean = alpha * np.asarray(grad_avg, np.float64) + (1.0 - alpha) * g
        grad_avg[...] = mean
        denom = np.sqrt(v - mean ** 2) + eps
    else:
        denom = np.sqrt(v) + eps
    if momentum > 0:
        buf = momentum * np.asarray(momentum_buffer, np.float64) + g / denom
        momentum_buffer[...] = buf
        param[...] = p - lr * buf
    else:
        param[...] = p - lr * g / denom


def adagrad_step(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0,
                 weight_decay=0.0, eps=1e-10, maximize=False):
    p, grad, s = _f64(param, grad, state_sum)
    g = _direction(p, grad, weight_decay, maximize)
    clr = lr / (1.0 + (step - 1) * lr_decay)
    s = s + g ** 2
    state_sum[...] = s
    param[...] = p - clr * g / (np.sqrt(s) + eps)


def adadelta_step(param, grad, square_avg, acc_delta, *, lr=1.0, rho=0.9, eps=1e-6,
                  weight_decay=0.0, maximize=False):
    p, grad, v, u = _f64(param, grad, square_avg, acc_delta)
    g = _direction(p, grad, weight_decay, maximize)
    v = rho * v + (1.0 - rho) * g ** 2
    delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g   # RMS[dx]_{t-1} / RMS[g]_t * g
    u = rho * u + (1.0 - rho) * delta ** 2
    param[...], square_avg[...], acc_delta[...] = p - lr * delta, v, u


def adamax_step(param, grad, exp_avg, exp_inf, *, step, lr=2e-3, betas=(0.9, 0.999),
                eps=1e-8, weight_decay=0.0, maximize=False, grad_scale=None):
    beta1, beta2 = betas
    p, grad, m, u = _f64(param, grad, exp_avg, exp_inf)
    g = _direction(p, _unscaled(grad, grad_scale), weight_decay, maximize)
    m = beta1 * m + (1.0 - beta1) * g
    u = np.maximum(beta2 * u, np.abs(g) + eps)      # the infinity norm, eps inside
    param[...] = p - lr / (1.0 - beta1 ** step) * m / u
    exp_avg[...], exp_inf[...] = m, u


def radam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999),
               eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, maximize=False):
    beta1, beta2 = betas
    p, grad, m, v = _f64(param, grad, exp_avg, exp_avg_sq)
    if decoupled_weight_decay:
        p = p * (1.0 - lr * weight_decay)
        g = _direction(p, grad, 0.0, maximize)
    else:
        g = _direction(p, grad, weight_decay, maximize)
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g ** 2
    m_hat = m / (1.0 - beta1 ** step)
    rho_inf = 2.0 / (1.0 - beta2) - 1.0          # length of the approximated SMA
    rho_t = rho_inf - 2.0 * step * beta2 ** step / (1.0 - beta2 ** step)
    if rho_t > 5.0:
        r = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                    / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        # eps added to sqrt(v) before the bias correction, as torch places it
        v_hat = np.sqrt(v) / np.sqrt(1.0 - beta2 ** step) + eps / np.sqrt(1.0 - beta2 ** step)
        param[...] = p - lr * m_hat * r / v_hat
    else:
        param[...] = p - lr * m_hat
    exp_avg[...], exp_avg_sq[...] = m, v


def rprop_step(param, grad, prev, step_size, *, lr=1e-2, etas=(0.5, 1.2),
               step_sizes=(1e-6, 50), maximize=False):
    etaminus, etaplus = etas
    p, g, prev64, size = _f64(param, grad, prev, step_size)
    g = -g if maximize else g
    agree = np.sign(g * prev64)
    factor = np.where(agree > 0, etaplus, np.where(agree < 0, etaminus, 1.0))
    size = np.clip(size * factor, step_sizes[0], step_sizes[1])
    g = np.where(agree < 0, 0.0, g)              # a sign change: no move this step
    param[...] = p - np.sign(g) * size
    prev[...], step_size[...] = g, size


def nadam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=2e-3, betas=(0.9, 0.999),
               eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
               decoupled_weight_decay=False, maximize=False, mu_product=None):
    """Returns the new mu_product, which torch keeps as a float32 tensor (so it
    is rounded to float32 here too)."""
    beta1, beta2 = betas
    p, grad, m, v = _f64(param, grad, exp_avg, exp_avg_sq)
    if decoupled_weight_decay:
        p = p * (1.0 - lr * weight_decay)
        g = _direction(p, grad, 0.0, maximize)
    else:
        g = _direction(p, grad, weight_decay, maximize)
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))        # Dozat's schedule
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    product = float(np.float32(np.float32(1.0 if mu_product is None else mu_product)
                               * np.float32(mu)))
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g ** 2
    v_hat = v / (1.0 - beta2 ** step)
    m_hat = mu_next * m / (1.0 - product * mu_next) + (1.0 - mu) * g / (1.0 - product)
    param[...] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    exp_avg[...], exp_avg_sq[...] = m, v
    return {"mu_product": product}


def asgd_step(param, grad, ax, *, step, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6,
              weight_decay=0.0, maximize=False, eta=None, mu=None):
    """Returns the next step's eta and mu, float32 as torch keeps them."""
    f32 = lambda x: float(np.float32(x))          # noqa: E731
    eta, mu = f32(lr if eta is None else eta), f32(1.0 if mu is None else mu)
    p, grad, a = _f64(param, grad, ax)
    g = _direction(p, grad, weight_decay, maximize)
    p = p * (1.0 - lambd * eta) - eta * g
    a = a + (p - a) * mu if mu != 1.0 else p     # Polyak averaging
    param[...], ax[...] = p, a
    return {"eta": f32(lr / (1.0 + lambd * lr * step) ** alpha),
            "mu": f32(1.0 / max(1.0, step - t0))}


def lion_step(param, grad, exp_avg, *, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0,
              maximize=False):
    """Chen et al. (2023), Algorithm 2: the sign of an interpolation, then the momentum."""
    beta1, beta2 = betas
    p, grad, m = _f64(param, grad, exp_avg)
    g = -grad if maximize else grad
    update = np.sign(beta1 * m + (1.0 - beta1) * g)
    param[...] = p * (1.0 - lr * weight_decay) - lr * update
    exp_avg[...] = beta2 * m + (1.0 - beta2) * g


def sparse_adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3,
                     betas=(0.9, 0.999), eps=1e-8, maximize=False):
    """torch.optim.SparseAdam on a gradient holding every element: Adam without
    decay, eps added to sqrt(v) before the bias correction folds into the step."""
    beta1, beta2 = betas
    p, grad, m, v = _f64(param, grad, exp_avg, exp_avg_sq)
    g = -grad if maximize else grad
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g ** 2
    step_size = lr * np.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
    param[...] = p - step_size * m / (np.sqrt(v) + eps)
    exp_avg[...], exp_avg_sq[...] = m, v


STEPS = {"adam": adam_step, "adamw": adamw_step, "sgd": sgd_step,
         "rmsprop": rmsprop_step, "adagrad": adagrad_step, "adadelta": adadelta_step,
         "adamax": adamax_step, "radam": radam_step, "rprop": rprop_step,
         "nadam": nadam_step, "asgd": asgd_step, "lion": lion_step,
         "sparse_adam": sparse_adam_step}


# ------------------------------------------------------------------ stochastic rounding
_M32 = np.uint64(0xFFFFFFFF)


def _lowbias32(x):
    """Wellons' 32-bit hash "lowbias32" on a uint64 array below 2**32, written
    out from its publication."""
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x7FEB352D)) & _M32
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x846CA68B)) & _M32
    return x ^ (x >> np.uint64(16))


def stochastic_rounding_bits(key0, key1, index):
    """The random bits of the stream (key0, key1) (``stream_key(seed, step)``)
    at the uint64 array ``index``, as fastadapt documents them:
    ``lowbias32(key0 + lowbias32(key1 ^ page) + index)`` modulo 2**32, with
    ``page = index >> 32``."""
    index = np.asarray(index, np.uint64)
    page_key = _lowbias32(np.uint64(key1) ^ (index >> np.uint64(32)))
    return _lowbias32((np.uint64(key0) + page_key + (index & _M32)) & _M32)


def round_bfloat16_stochastic(x, bits):
    """bfloat16 bits (uint16) of the finite float32 array ``x`` rounded
    stochastically: the top 16 of the random ``bits`` added below the kept
    16 bits of ``x``, then truncated (rounds up with probability equal to
    the dropped fraction)."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + (np.asarray(bits, np.uint64) >> np.uint64(16))) >> np.uint64(16)).astype(np.uint16)
