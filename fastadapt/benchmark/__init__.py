"""``fastadapt bench``: fastadapt against NumPy, torch.optim and the memory roofline.

The update steps are memory-bound, so each is judged by the bandwidth it
reaches and, in one run on one machine, by ratios: to a same-traffic roofline
kernel (``fastadapt.kernels.roofline``), to a NumPy implementation written the
way a NumPy user would (``fastadapt.benchmark._numpy_reference``) and to
``torch.optim``'s single-tensor, foreach and fused paths. Every ratio is the
rival's time / fastadapt's (above 1: fastadapt is faster). The run also times
the per-call cost on small arrays, Adam over GPT-2 small's 148 parameter
arrays through the optimizer class, the cold start of a fresh process and,
with a GPU, the same comparison on the GPU (``_gpu``); ``--full`` adds more
sizes, full-size GPT-2 small and the serial/parallel threshold of the CPU
drivers.

Everything iterates over :data:`CONFIGS` (rule configurations of
:data:`fastadapt.RULES`), and the published table (``bench/RESULTS.md``) is
this module's output::

    fastadapt bench --markdown bench/RESULTS.md --plot bench/throughput.png

``fastadapt bench --help`` lists the options. torch and matplotlib are
optional: without them the torch columns say "torch not installed" and no
plot is drawn.
"""
from ._bare import bare_step, driver_call
from ._cli import main, parse_size
from ._configs import CONFIGS, Config, make_problem, select, size_label
from ._implementations import (BUILDERS, IMPLEMENTATIONS, LABELS, Unavailable, build_all,
                               gpt2_small_shapes)
from ._numpy_reference import NUMPY_STEPS

__all__ = ["main", "parse_size", "CONFIGS", "Config", "make_problem", "select", "size_label", "BUILDERS",
           "IMPLEMENTATIONS", "LABELS", "Unavailable", "build_all", "bare_step", "driver_call",
           "gpt2_small_shapes", "NUMPY_STEPS"]
