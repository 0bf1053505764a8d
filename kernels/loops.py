"""The loop drivers, generated for both targets from each kernel's math signature.

A driver runs one kernel over 1-D arrays of one dtype (checked by the
dispatcher). Its arguments are ``param``, ``grad``, the kernel's state arrays
and ``scalars`` (the host-computed scalars in the order of the math's
signature, flags as 0 / 1; a small array on the CPU, a by-value tuple on the
GPU). It unpacks the scalars once, then for every index loads each element,
calls the math and stores the results. A state array that an option turns
off may be empty. The driver branches once on the flags that turn state
arrays on or off and runs a loop in which those flags are literals, so a loop
never touches an off array, and each loop vectorizes without masks (a masked
vector load of an empty array reads addresses far past it, and where those
are unmapped, every masked-off lane takes a microcode assist: measured on
AMD Zen 4, RMSprop went from 1.76 to 0.62 ns per element at 2**23, serial).
A GPU warp never diverges on the branch.

For the Adam kernel the generated source reads (abridged)::

    def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars):
        grad_sign = scalars[0]
        ...
        amsgrad = scalars[11] != 0
        if amsgrad:
            for i in indices(param.size):
                e_param = param[i]
                ...
                e_max_exp_avg_sq = max_exp_avg_sq[i]
                e_param, e_exp_avg, e_exp_avg_sq, e_max_exp_avg_sq = elem(
                    e_param, e_grad, e_exp_avg, e_exp_avg_sq, e_max_exp_avg_sq,
                    grad_sign, ..., True, l2)
                param[i] = e_param
                ...
                max_exp_avg_sq[i] = e_max_exp_avg_sq
        else:
            for i in indices(param.size):
                ...
                e_max_exp_avg_sq = e_param
                ... = elem(..., False, l2)
                ...             # max_exp_avg_sq neither loaded nor stored

``indices`` and ``elem`` are bound per target: ``numba.prange`` and the
``njit`` math for the CPU, a grid-stride range and the CUDA device math for
the GPU. The source is compiled with this file's name, so Numba's cache
locator finds a real source file, and each driver's ``__qualname__`` carries
a hash of every input of its code (this file, ``math.py``, ``layout.py`` and
the storage modules it names, the target module and the kernels' state
declarations): an edit to any of them names new cache entries instead of
serving stale ones.
"""
import hashlib
import itertools
import inspect
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import layout as _layout, math as _math
from .blockwise8 import BLOCK
from .companded8 import GROUP
from .layout import (BFLOAT16, BLOCKWISE8, COMPANDED, FLOAT16, NATIVE, ROOT8, SOFTSIGN8,
                     SPLIT8, SPLIT16, Layout)

#: Blocks of 8-bit state per iteration of the parallel loop: each iteration
#: allocates its scratch buffers once for this many blocks. Small, so that the
#: threads' shares of a small array are even (prange splits the iterations
#: statically): at 10**4 elements (40 blocks) the call took 25 us with 4
#: against 32 us with 16; the allocation is not measurable at 2**14.
CHUNK = 4


#: Groups of companded state per iteration of the parallel loop.
GROUP_CHUNK = 32


class BlockLoops(NamedTuple):
    """How a target runs the loops over blocks (and groups) of 8-bit state:
    ``chunk`` blocks, or ``group_chunk`` groups, per iteration of
    ``indices``, each with a scratch buffer per 8-bit state allocated by
    ``scratch`` (a call of ``(size, dtype)``). The CPU's defaults; a GPU
    thread handles one block or group, in a local array."""
    chunk: int = CHUNK
    group_chunk: int = GROUP_CHUNK
    scratch: str = "empty"



# ``{x}`` is the element (``param[i]``, ``block_param[j]`` in a block of
# 8-bit state, ``param[uint64(start + j)]`` in a group of companded state),
# ``{a}`` the array's name and ``{j}`` the element's index in its block.
_LOAD = {NATIVE: "{x}", BFLOAT16: "bf16_to_f32({x})", FLOAT16: "f16_to_f32({x})",
         BLOCKWISE8: "new_{a}[{j}]",
         # decoded as it is loaded, by its group's old scale (``_group_loops``)
         SOFTSIGN8: "softsign_decode({x}, scale_{a}, {finite})",
         ROOT8: "root_decode({x}, scale_{a}, {finite})"}
# an 8-bit state's new value goes to its scratch buffer, its magnitude to its
# block's (group's) largest finite one
_TOP = ("{pad}u_{a} = magnitude_bits({v})\n"
        "{pad}top_{a} = max(top_{a}, u_{a} if u_{a} < INF_BITS else uint32(0))")
# ... and its largest magnitude, non-finite ones included: whether there are any
_WORST = "\n{pad}worst_{a} = max(worst_{a}, u_{a})"
_STORE = {NATIVE: "{x} = {v}", BFLOAT16: "{x} = f32_to_bf16({v})",
          FLOAT16: "{x} = f32_to_f16({v})",
          BLOCKWISE8: "new_{a}[{j}] = {v}\n" + _TOP + _WORST,
          # a fourth-root state keeps its square root (see ``_group_loops``)
          SOFTSIGN8: "new_{a}[uint64(at + j)] = {v}\n" + _TOP + _WORST,
          # (its worst: the value's bits, sign included, so that a negative
          # one, whose root is NaN, counts as not finite too)
          ROOT8: "new_{a}[uint64(at + j)] = root_of({v})\n" + _TOP
                 + "\n{pad}worst_{a} = max(worst_{a}, float32_to_bits({v}))"}
# companded state in blocks (one group per GPU thread): from and to the
# scratch buffer, as 8-bit blockwise state
_BLOCK_LOAD = {**_LOAD, SOFTSIGN8: "new_{a}[{j}]", ROOT8: "new_{a}[{j}]"}
_BLOCK_STORE = {**_STORE, SOFTSIGN8: "new_{a}[{j}] = {v}\n" + _TOP,
                ROOT8: "new_{a}[{j}] = {v}\n" + _TOP}




class Signature:
    """What a driver needs to know of a kernel's math: element and scalar names."""

    def __init__(self, kernel, state):
        fn = getattr(_math, kernel)
        params = list(inspect.signature(fn).parameters.values())
        names = [p.name for p in params]
        expected = ["param", "grad", *(s for s, _ in state)]
        if names[:len(expected)] != expected:
            raise TypeError(f"math.{kernel} must take {', '.join(expected)} first, "
                            f"then its scalars; it takes {', '.join(names)}")
        self.kernel = kernel
        self.state = tuple(state)
        self.elements = tuple(expected)
        scalars = params[len(expected):]
        self.scalars = tuple(p.name for p in scalars)
        self.flags = frozenset(p.name for p in scalars if p.annotation is bool)
        for _, flag in self.state:
            if flag is not None and flag not in self.flags:
                raise TypeError(f"math.{kernel}: state flag {flag!r} must be a scalar "
                                "annotated ': bool'")

    def source(self, name, layout=None, blocking=BlockLoops()):
        """The driver's Python source, as a function called ``name``, for the
        storage ``layout`` (all arrays in the compute dtype if None).

        A layout other than the plain one loads each element through a
        widening conversion and stores it through a narrowing one (see
        ``layout.py``); the math in between is the same. ``blocking``: see
        :class:`BlockLoops`.
        """
        return self._layout_source(name, layout or Layout((NATIVE,) * len(self.elements)),
                                   blocking)

    def _layout_source(self, name, layout, blocking):
        if len(layout.codes) != len(self.elements):
            raise ValueError(f"layout {layout.tag!r} has {len(layout.codes)} codes for "
                             f"{len(self.elements)} arrays")
        if layout.stochastic and layout.codes[0] not in (BFLOAT16, FLOAT16):
            raise ValueError("stochastic rounding stores 16-bit parameters only")
        if layout.master not in (False, True, SPLIT16, SPLIT8):
            raise ValueError(f"layout master {layout.master!r}: False, True, SPLIT16 or SPLIT8")
        if layout.master in (SPLIT16, SPLIT8) and (layout.codes[0] != BFLOAT16
                                                   or layout.stochastic):
            raise ValueError("a split master goes with bfloat16 params, rounded to nearest")
        codes = dict(zip(self.elements, layout.codes))
        blockwise = [s for s, _ in self.state if codes[s] == BLOCKWISE8]
        grouped = [s for s, _ in self.state if codes[s] in COMPANDED]
        if blockwise and grouped:
            raise ValueError("one update keeps its 8-bit state in one format")
        args = []
        for a in self.elements:
            args += [a, f"{a}_absmax", f"{a}_map", f"{a}_thresholds", f"{a}_buckets"] \
                if a in blockwise else [a, f"{a}_scale"] if a in grouped else [a]
        args += (["master"] if layout.master else []) + ["scalars"]
        args += ["key0", "key1", "offset"] if layout.stochastic else []
        lines = [f"def {name}({', '.join(args)}):"]
        for k, s in enumerate(self.scalars):
            lines.append(f"    {s} = scalars[{k}] != 0" if s in self.flags
                         else f"    {s} = scalars[{k}]")
        # One loop per setting of the flags that turn state arrays on or off,
        # each with its flags as literals, so no loop loads an array that is
        # off. (Left to LLVM, a load under a flag becomes a masked vector load
        # from the off array's empty buffer, at addresses far past it: where
        # those are unmapped, every masked-off lane takes a microcode assist,
        # and a bfloat16-state Adam ran ten times slower from 2**22 elements.)
        gates = sorted({flag for _, flag in self.state if flag is not None})
        if not gates:
            lines += self._layout_loops(layout, codes, blockwise or grouped, {}, "    ",
                                        blocking)
            return "\n".join(lines) + "\n"
        for k, values in enumerate(itertools.product((True, False), repeat=len(gates))):
            fixed = dict(zip(gates, values))
            test = " and ".join(g if v else f"not {g}" for g, v in fixed.items())
            lines.append(f"    {'if' if k == 0 else 'elif'} {test}:" if k < 2 ** len(gates) - 1
                         else "    else:")
            lines += self._layout_loops(layout, codes, blockwise or grouped, fixed,
                                        "        ", blocking)
        return "\n".join(lines) + "\n"

    def _layout_loops(self, layout, codes, blockwise, fixed, pad, blocking):
        """The loops of a layout driver, for the flags ``fixed`` (name -> bool)."""
        if not blockwise:
            if layout.stochastic:
                return self._page_loops(layout, codes, fixed, pad)
            return [f"{pad}for i in indices(param.size):"] + \
                self._element(layout, codes, pad + "    ", fixed)
        if codes[blockwise[0]] in COMPANDED:
            return self._group_loops(layout, codes, blockwise, fixed, pad, blocking)
        # 8-bit blockwise state, a chunk of CHUNK blocks per iteration (each
        # chunk allocates one BLOCK-element float32 scratch buffer per 8-bit
        # state, reused by its blocks). Per block, in four loops:
        #  1. dequantize each 8-bit state into its scratch buffer (a table
        #     lookup per element, which LLVM does not vectorize on CPUs whose
        #     gathers are slow, so it is kept out of the update's loop);
        #  2. update every element (vectorized), store the param and the other
        #     state, put each 8-bit state's new value back in its scratch
        #     buffer and take the block's new absmax, its largest finite
        #     magnitude, and whether it holds a non-finite value (integer
        #     maxima of magnitude bits, see convert16.magnitude_bits: a float
        #     maximum does not vectorize without fast-math);
        #  3. divide the scratch buffer by the new absmax (vectorized);
        #  4. store the nearest codes (two table lookups per element: see
        #     blockwise8.nearest_code_bucketed).
        # A block holding a non-finite value uses the second half of the
        # tables (blockwise8.special_map: codes for NaN, -inf and +inf), says so
        # by the sign bit of its stored absmax, and scales by at least the
        # smallest float32 (an infinite code times an absmax of 0 would be
        # NaN); so a NaN or inf stays in its element and the others keep
        # their values. A block of finite values is stored as before.
        # Blocks are independent, so any chunking gives the same bits. The
        # loops index slices of the block from 0, which LLVM sees are
        # non-negative: with ``array[start + j]`` it cannot, keeps Numba's
        # negative-index wraparound on every access and vectorizes nothing.
        sliced = blocking.chunk == 1
        on, inner, lines = self._block_header(layout, blockwise, fixed, pad, BLOCK,
                                              blocking.chunk, blocking.scratch, sliced)

        def at(a):
            return f"block_{a}[j]" if sliced else f"{a}[uint64(start + j)]"
        for s in on:
            lines += [f"{inner}stored_{s} = {s}_absmax[block]",
                      f"{inner}if float32_to_bits(stored_{s}) >= SIGN_BIT:",
                      f"{inner}    map_{s} = {s}_map[{BLOCK}:]",
                      f"{inner}    scale_{s} = max(-stored_{s}, TINY)",
                      f"{inner}else:",
                      f"{inner}    map_{s} = {s}_map[:{BLOCK}]",
                      f"{inner}    scale_{s} = stored_{s}",
                      f"{inner}for j in range(count):",
                      f"{inner}    new_{s}[j] = map_{s}[{at(s)}] * scale_{s}",
                      f"{inner}top_{s} = uint32(0)",
                      f"{inner}worst_{s} = uint32(0)"]
        lines.append(f"{inner}for j in range(count):")
        lines += self._element(layout, codes, inner + "    ", fixed, block=True,
                               sliced=sliced)
        for s in on:
            lines += [f"{inner}absmax_{s} = bits_to_float32(top_{s})",
                      f"{inner}if worst_{s} >= INF_BITS:",
                      f"{inner}    divisor_{s} = max(absmax_{s}, TINY)",
                      f"{inner}    thresholds_{s} = {s}_thresholds[{BLOCK}:]",
                      f"{inner}    buckets_{s} = {s}_buckets[65536:]",
                      f"{inner}    {s}_absmax[block] = -absmax_{s}",
                      f"{inner}else:",
                      f"{inner}    divisor_{s} = absmax_{s}",
                      f"{inner}    thresholds_{s} = {s}_thresholds[:{BLOCK}]",
                      f"{inner}    buckets_{s} = {s}_buckets[:65536]",
                      f"{inner}    {s}_absmax[block] = absmax_{s}",
                      f"{inner}for j in range(count):",
                      f"{inner}    new_{s}[j] = new_{s}[j] / divisor_{s}",
                      f"{inner}for j in range(count):",
                      f"{inner}    {at(s)} = nearest_code(buckets_{s}, "
                      f"thresholds_{s}, new_{s}[j])"]
        return lines

    def _page_loops(self, layout, codes, fixed, pad):
        """The loops of a stochastic-rounding driver: one per page of the
        random stream (``PAGE`` = 2**32 consecutive indices ``offset + i``,
        so nearly always one) over each used array's slice ``page_<array>``
        of it, drawing the bits of the element ``i`` places into the slice as
        ``page_bits(base, i)``, ``base`` the hash input of its first element
        (``convert16.page_base``): the same bits as ``random_bits(key0, key1,
        offset + i)``, with 32-bit lanes in the loop (see
        ``convert16.page_bits``)."""
        gate = dict(self.state)
        used = [a for a in self.elements if fixed.get(gate.get(a), True)]
        used += ["master"] if layout.master else []
        inner = pad + "    "
        lines = [f"{pad}n = param.size",
                 f"{pad}first = 0",
                 f"{pad}while first < n:",
                 f"{inner}index = offset + first",
                 f"{inner}count = min(n - first, PAGE - (index & PAGE_MASK))",
                 f"{inner}base = page_base(key0, key1, index)"]
        lines += [f"{inner}page_{a} = {a}[first:first + count]" for a in used]
        lines.append(f"{inner}for i in indices(count):")
        lines += self._element(layout, codes, inner + "    ", fixed, page=True)
        lines.append(f"{inner}first += count")
        return lines

    def _block_header(self, layout, coded, fixed, pad, size, chunk, scratch, sliced=True):
        """The lines that open the loops over blocks of ``size`` elements,
        ``chunk`` blocks per parallel iteration: the scratch buffers (made by
        the call ``scratch``) of the
        8-bit states that are ``on`` (of ``coded``, the flags ``fixed``) and
        each array's slice ``block_<array>`` of block ``block`` (unless not
        ``sliced``: the loops then index the arrays with ``uint64(start + j)``;
        on the CPU each slice takes and drops a reference to the array, two
        atomic operations on a counter the threads share, per block). Returns
        ``(on, the block body's indent, lines)``."""
        gate = dict(self.state)
        on = [s for s in coded if fixed.get(gate[s], True)]
        arrays = list(self.elements) + (["master"] if layout.master else [])
        inner = pad + "        "
        lines = [f"{pad}n = param.size",
                 f"{pad}blocks = (n + {size - 1}) // {size}",
                 f"{pad}for chunk in indices((blocks + {chunk - 1}) // {chunk}):"]
        lines += [f"{pad}    new_{s} = {scratch}({size}, float32)" for s in on]
        lines += [f"{pad}    for block in range(chunk * {chunk}, "
                  f"min(chunk * {chunk} + {chunk}, blocks)):",
                  f"{inner}start = block * {size}",
                  f"{inner}count = min(n - start, {size})"]
        # (an array that a flag turns off is empty: its slice is too, unused)
        if sliced:
            lines += [f"{inner}block_{a} = {a}[start:start + count]" for a in arrays]
        return on, inner, lines

    def _group_loops(self, layout, codes, grouped, fixed, pad, blocking):
        """The loops over groups of companded 8-bit state (``grouped``: its
        arrays): :meth:`_group_chunks` where a parallel iteration runs several
        groups (the CPU), else (a GPU thread, one group) as the blockwise ones
        (see ``_layout_loops``) but with arithmetic codecs: per group of
        GROUP elements, decode each state into a scratch buffer, update every
        element (taking the group's largest finite magnitude as an integer
        maximum), then encode each value against the new scale (at least the
        smallest float32, so a group of zeros and non-finite values divides
        by something). NaN and +-inf have codes of their own, so they stay in
        their element."""
        if blocking.group_chunk > 1:
            return self._group_chunks(layout, codes, grouped, fixed, pad, blocking)
        on, inner, lines = self._block_header(layout, grouped, fixed, pad, GROUP,
                                              blocking.group_chunk, blocking.scratch)
        decode = {SOFTSIGN8: "softsign_decode", ROOT8: "root_decode"}
        for s in on:
            lines += [f"{inner}scale_{s} = {s}_scale[block]",
                      f"{inner}for j in range(count):",
                      f"{inner}    new_{s}[j] = {decode[codes[s]]}(block_{s}[j], scale_{s}, "
                      "False)",
                      f"{inner}top_{s} = uint32(0)"]
        lines.append(f"{inner}for j in range(count):")
        lines += self._element(layout, codes, inner + "    ", fixed, block=True)
        for s in on:
            lines += [f"{inner}scale_{s} = bits_to_float32(top_{s})",
                      f"{inner}divisor_{s} = max(scale_{s}, TINY)"]
            if codes[s] == SOFTSIGN8:
                lines += [f"{inner}pre_{s}, reciprocal_{s} = softsign_scaling(divisor_{s})",
                          f"{inner}for j in range(count):",
                          f"{inner}    block_{s}[j] = softsign_encode(new_{s}[j], pre_{s}, "
                          f"reciprocal_{s}, False)"]
            else:
                lines += [f"{inner}factor_{s} = root_scaling(divisor_{s})",
                          f"{inner}for j in range(count):",
                          f"{inner}    block_{s}[j] = root_encode(root_of(new_{s}[j]), "
                          f"factor_{s}, False)"]
            lines.append(f"{inner}{s}_scale[block] = scale_{s}")
        return lines

    def _group_chunks(self, layout, codes, grouped, fixed, pad, blocking):
        """The loops over groups of companded 8-bit state (``grouped``: its
        arrays) for the CPU, ``blocking.group_chunk`` groups per parallel
        iteration, in two passes over the chunk:

        1. per group: decode each state (by the group's old scale) as it is
           loaded, update every element, store the param and the other
           arrays, put each 8-bit state's new value in the chunk's scratch
           buffer (a fourth-root state's square root, which the update
           computed: see ``companded8.root_of``) and store the group's new
           scale, its largest finite magnitude (an integer maximum of
           magnitude bits, see ``convert16.magnitude_bits``);
        2. per group: encode each scratch value against the new scale (at
           least the smallest float32, so a group of zeros and non-finite
           values divides by something; its divisions are per group:
           ``companded8.softsign_scaling`` / ``root_scaling``).

        NaN and +-inf have codes of their own, so they stay in their element.
        A full group leaves out the codecs' selects for them (their
        ``finite`` path) where it has none: in pass 1 when none of its codes
        is of a non-finite value (a scan of the codes, ``softsign_special`` /
        ``root_special``), in pass 2 when none of its new values is (their
        largest magnitude bits, kept with the scale; a second moment's bits
        with the sign, so that a negative one, whose root is NaN, counts).
        The bits are the same either way; companded Adam took 6-10% less
        time with it on one thread in L2 and L3, 4-7% at 2**24 on two
        threads (AMD EPYC Zen 4).
        Measured (AMD EPYC, AVX2, one thread, in L2), each choice here paid:

        * the arrays are indexed by ``uint64`` indices, not sliced per group
          (each slice of a Numba array takes and drops a reference, two
          atomic operations on a counter every thread shares), and not by
          ``int64`` ones, whose sign LLVM cannot always prove (Numba then
          wraps negative indices on every access and nothing vectorizes);
        * a full group runs loops of ``GROUP`` iterations, a constant trip
          count (no remainder loop), the last, partial one a loop of
          ``count``;
        * the two passes each cover the chunk: one group's encoding waits
          for its scale (the end of its update, a chain of divisions and
          square roots), so with both passes per group the processor idled
          on that chain (3.7 ns per Adam element against 3.0).
        """
        gate = dict(self.state)
        on = [s for s in grouped if fixed.get(gate[s], True)]
        chunk = blocking.group_chunk
        inner = pad + "        "
        lines = [f"{pad}n = param.size",
                 f"{pad}groups = (n + {GROUP - 1}) // {GROUP}",
                 f"{pad}for chunk in indices((groups + {chunk - 1}) // {chunk}):"]
        # each scratch buffer: the chunk's values, then three factors per group
        # (the last: 1 where the group's new values are all finite, else 0)
        size, factors = chunk * GROUP, chunk * GROUP + chunk
        all_finite = f"uint64({chunk * GROUP + 2 * chunk} + block - first)"
        lines += [f"{pad}    new_{s} = {blocking.scratch}({size + 3 * chunk}, float32)"
                  for s in on]
        lines += [f"{pad}    first = chunk * {chunk}",
                  f"{pad}    last = min(first + {chunk}, groups)"]
        head = [f"{pad}    for block in range(first, last):",
                f"{inner}start = block * {GROUP}",
                f"{inner}count = min(n - start, {GROUP})",
                f"{inner}at = (block - first) * {GROUP}"]
        lines += head
        for s in on:
            lines += [f"{inner}scale_{s} = {s}_scale[block]", f"{inner}top_{s} = uint32(0)",
                      f"{inner}worst_{s} = uint32(0)"]
        # a full group none of whose codes is of a non-finite value decodes
        # without the selects for them (the rest: partial groups, and those
        # holding such a code, rare, with them)
        body = self._element(layout, codes, inner + "        ", fixed, group=True)
        fast = self._element(layout, codes, inner + "        ", fixed, group=True,
                             finite=True)
        special = {SOFTSIGN8: "softsign_special", ROOT8: "root_special"}
        scan = " | ".join(f"{special[codes[s]]}({s}[uint64(start + j)])" for s in on)
        lines.append(f"{inner}special = count < {GROUP}")
        if on:
            lines += [f"{inner}if not special:",
                      f"{inner}    hits = uint32(0)",
                      f"{inner}    for j in range({GROUP}):",
                      f"{inner}        hits |= uint32({scan})",
                      f"{inner}    special = hits != uint32(0)"]
        lines += [f"{inner}if special:",
                  f"{inner}    for j in range(count):",
                  *body,
                  f"{inner}else:",
                  f"{inner}    for j in range({GROUP}):",
                  *fast]
        for s in on:
            lines += [f"{inner}{s}_scale[block] = bits_to_float32(top_{s})",
                      f"{inner}new_{s}[{all_finite}] = "
                      f"float32(1.0) if worst_{s} < INF_BITS else float32(0.0)"]
        if not on:
            return lines
        # the groups' factors (a division and two square roots per group), in
        # a loop of its own, which vectorizes: Adam went from 2.96 to 2.88 ns
        # per element (one thread, in L2; a loaded machine, so a small gain)
        factor = [f"{inner}f0 = uint64({size} + block - first)",
                  f"{inner}f1 = uint64({factors} + block - first)"]
        lines += [f"{pad}    for block in range(first, last):", *factor]
        encode, load = [], []
        for s in on:
            lines.append(f"{inner}divisor_{s} = max({s}_scale[block], TINY)")
            v = f"new_{s}[uint64(at + j)]"
            if codes[s] == SOFTSIGN8:
                lines += [f"{inner}pre_{s}, reciprocal_{s} = softsign_scaling(divisor_{s})",
                          f"{inner}new_{s}[f0] = pre_{s}", f"{inner}new_{s}[f1] = reciprocal_{s}"]
                load += [f"{inner}pre_{s} = new_{s}[f0]", f"{inner}reciprocal_{s} = new_{s}[f1]"]
                encode.append(f"{s}[uint64(start + j)] = softsign_encode({v}, pre_{s}, "
                              f"reciprocal_{s}, {{finite}})")
            else:
                lines.append(f"{inner}new_{s}[f0] = root_scaling(divisor_{s})")
                load.append(f"{inner}factor_{s} = new_{s}[f0]")
                encode.append(f"{s}[uint64(start + j)] = root_encode({v}, factor_{s}, "
                              "{finite})")
        every = " and ".join(f"new_{s}[{all_finite}] != float32(0.0)" for s in on)
        lines += head + factor + load
        lines += [f"{inner}if count == {GROUP} and {every}:",
                  f"{inner}    for j in range({GROUP}):",
                  *(f"{inner}        {e.format(finite=True)}" for e in encode),
                  f"{inner}else:",
                  f"{inner}    for j in range(count):",
                  *(f"{inner}        {e.format(finite=False)}" for e in encode)]
        return lines

    def _element(self, layout, codes, pad, fixed, block=False, group=False, sliced=True,
                 page=False, finite=False):
        """The lines that load element ``i`` (``block``: element ``j`` of the
        block's slices ``block_<array>``, whose first is element ``start``, or
        unless ``sliced`` of the arrays at ``uint64(start + j)``; ``group``:
        element ``j`` of a group of companded state, see ``_group_chunks``;
        ``page``: element ``i`` of the page's slices ``page_<array>``, see
        ``_page_loops``; ``finite``: no 8-bit code in the group is of a
        non-finite value), update it and store it; an 8-bit state's new value goes to its block's
        scratch buffer (see ``_layout_loops``). ``fixed``: the value of every
        state-gating flag in this loop (name -> bool), passed to the math as
        literals; a state array whose flag is off is neither loaded nor stored."""
        index = "j" if block else "i"

        def x(a):
            if (block and not sliced) or group:
                return f"{a}[uint64(start + j)]"
            return f"block_{a}[j]" if block else f"page_{a}[i]" if page else f"{a}[i]"
        loads, stores = (_BLOCK_LOAD, _BLOCK_STORE) if block else (_LOAD, _STORE)
        load = {a: loads[codes[a]].format(a=a, x=x(a), j=index, finite=finite)
                for a in self.elements}
        split = layout.master in (SPLIT16, SPLIT8)
        if split:
            load["param"] = f"split{layout.master}_join({x('param')}, {x('master')})"
        elif layout.master:
            load["param"] = x("master")
        lines = [f"{pad}e_param = {load['param']}", f"{pad}e_grad = {load['grad']}"]
        for s, flag in self.state:
            lines.append(f"{pad}e_{s} = {load[s] if flag is None or fixed[flag] else 'e_param'}")
        outputs = ", ".join(f"e_{a}" for a in ("param",) + tuple(s for s, _ in self.state))
        scalars = [str(fixed[c]) if c in fixed else c for c in self.scalars]
        inputs = ", ".join([f"e_{a}" for a in self.elements] + scalars)
        lines.append(f"{pad}{outputs} = elem({inputs})")
        if split:
            lines += [f"{pad}{x('param')} = split{layout.master}_high(e_param)",
                      f"{pad}{x('master')} = split{layout.master}_low(e_param)"]
        elif layout.master:
            lines.append(f"{pad}{x('master')} = e_param")
        if layout.stochastic:
            to = "bf16" if codes["param"] == BFLOAT16 else "f16"
            bits = "page_bits(base, i)" if page else \
                f"random_bits(key0, key1, offset + {'start + j' if block or group else 'i'})"
            lines.append(f"{pad}{x('param')} = f32_to_{to}_stochastic(e_param, {bits})")
        elif not split:
            lines.append(pad + _STORE[codes["param"]].format(x=x("param"), v="e_param"))
        for s, flag in self.state:
            if flag is None or fixed[flag]:
                lines.append(pad + stores[codes[s]].format(a=s, x=x(s), v=f"e_{s}", j=index,
                                                           pad=pad))
        return lines


def signatures(specs):
    """Kernel name -> :class:`Signature`, for ``specs`` as ``rules.kernel_specs()``."""
    return {kernel: Signature(kernel, state) for kernel, state in specs.items()}


def source_hash(target_file, specs):
    """A short hash of everything a driver's code depends on."""
    h = hashlib.sha256()
    storage = [m.__file__ for m in _layout.STORAGE_MODULES]
    for path in (__file__, _math.__file__, _layout.__file__, *storage, target_file):
        h.update(Path(path).read_bytes())
    h.update(repr(sorted(specs.items())).encode())
    return h.hexdigest()[:16]


def build(element_jit, vocabulary, indices, module, target_file, specs):
    """The drivers for one target, as plain Python functions to compile.

    ``element_jit`` compiles the per-element math (e.g. ``njit(inline="always")``)
    with ``vocabulary`` (see ``math.compile_with``), ``indices(n)`` yields the
    indices this target's thread visits, and ``module`` / ``target_file`` name
    the target module: recorded in the drivers' ``__module__`` and, with the
    source hash, in their ``__qualname__`` (``cpu.adam_<hash>``) so each
    target's drivers get cache files of their own. Returns ``(math, drivers)``:
    the compiled math as a namespace and a dict kernel name -> driver.
    """
    sigs = signatures(specs)
    math = _math.compile_with(element_jit, vocabulary, names=tuple(sigs))
    digest = source_hash(target_file, specs)
    short = module.rpartition(".")[2]
    drivers = {}
    for kernel, sig in sigs.items():
        namespace = {"indices": indices, "elem": getattr(math, kernel)}
        code = compile(sig.source(kernel), __file__, "exec")
        exec(code, namespace)
        driver = namespace[kernel]
        driver.__module__ = module
        driver.__qualname__ = f"{short}.{kernel}_{digest}"
        drivers[kernel] = driver
    return math, drivers


def build_layout(sig, layout, elem, vocabulary, indices, module, digest,
                 blocking=BlockLoops()):
    """The driver of one kernel (``sig``) for one storage ``layout``, as a plain
    Python function to compile: ``vocabulary`` binds the storage conversions
    (``layout.storage_vocabulary``: ``bf16_to_f32``, ``f32_to_bf16``,
    ``f16_to_f32``, ``f32_to_f16``, ``f32_to_bf16_stochastic``,
    ``f32_to_f16_stochastic``, ``random_bits``; for 8-bit state
    ``nearest_code``, ``magnitude_bits``, ``bits_to_float32`` and
    ``float32_to_bits``; and what ``blocking.scratch`` names, see
    :class:`BlockLoops`) for the target; its
    ``__qualname__`` carries the source hash and the layout's tag, so each
    layout is a cached driver of its own."""
    name = f"{sig.kernel}_{layout.tag}"
    namespace = {"indices": indices, "elem": elem, "float32": np.float32,
                 "uint32": np.uint32, "uint64": np.uint64, "empty": np.empty, "INF_BITS": np.uint32(0x7F800000),
                 "SIGN_BIT": np.uint32(0x80000000), "TINY": np.float32(2.0 ** -149),
                 "PAGE": np.int64(2 ** 32), "PAGE_MASK": np.int64(2 ** 32 - 1),
                 **vocabulary}
    exec(compile(sig.source(name, layout, blocking), __file__, "exec"), namespace)
    driver = namespace[name]
    driver.__module__ = module
    driver.__qualname__ = f"{module.rpartition('.')[2]}.{sig.kernel}_{digest}_{layout.tag}"
    return driver


