"""Reading PTX text: the global loads and stores of a kernel, the kernel
argument each one addresses, the loops they sit in, and the kernel's float64
instructions.

``cuda_check.py`` checks each compiled kernel's memory traffic and float64
work with these; they read the text NVVM emits (``numba.cuda.compile_ptx``)
and need neither a compiler nor a GPU.
"""
import collections
import re

_WIDTH = {"8": 1, "16": 2, "32": 4, "64": 8}
_MEMORY_OP = re.compile(r"^\s*(?:@!?%p\d+\s+)?(ld|st)\.global(?:\.nc)?(?:\.v([24]))?"
                        r"\.[a-z]+(8|16|32|64)\b", re.M)
_F64 = re.compile(r"^\s*(?:@!?%p\d+\s+)?([a-z][\w.]*\.f64)\b", re.M)


def bodies(ptx):
    """The element bodies of a PTX kernel: ``(load widths, store widths)``
    of each run of global loads followed by a run of global stores."""
    out, loads, stores = [], [], []
    for op, vector, bits in _MEMORY_OP.findall(ptx):
        size = _WIDTH[bits] * int(vector or 1)
        if op == "ld":
            if stores:
                out.append((tuple(sorted(loads)), tuple(sorted(stores))))
                loads, stores = [], []
            loads.append(size)
        else:
            stores.append(size)
    if loads or stores:
        out.append((tuple(sorted(loads)), tuple(sorted(stores))))
    return out


def within(small, large):
    """Whether the multiset ``small`` is contained in ``large``."""
    rest = list(large)
    for x in small:
        if x not in rest:
            return False
        rest.remove(x)
    return True


_REGISTER = re.compile(r"%[a-z]+\d+")
_PARAM = re.compile(r"_param_(\d+)\]")
_LABEL = re.compile(r"^(\$L\w+):")
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L\w+);")


def accesses(ptx, arrays=None):
    """The global loads and stores of ``ptx`` grouped by loop: ``{loop:
    [(op, argument), ...]}``, ``op`` ``"ld"`` or ``"st"``, ``argument`` the
    kernel argument accessed (None if unknown) and ``loop`` the line of the
    innermost loop's label (None for code outside loops: peeled iterations).
    See :func:`traced_accesses`."""
    regions = {}
    for region, op, argument, _ in traced_accesses(ptx, arrays):
        regions.setdefault(region, []).append((op, argument))
    return regions


def traced_accesses(ptx, arrays=None):
    """The global loads and stores of ``ptx`` in text order: ``(loop, op,
    argument, width)`` as in :func:`accesses`, ``width`` in bytes.

    An access's argument is found by following its address register back
    through the instructions that computed it to the kernel parameters it
    came from (Numba passes a 1-D array as 7 parameters, its data pointer
    and its length among them; the index itself comes from no parameter).
    ``arrays``: the number of array arguments, which come first; parameters
    after theirs are scalars, which may move an address but address no
    array (stochastic rounding's stream offset: its drivers slice the
    arrays at the stream's page boundaries, see ``loops._page_loops``).
    """
    lines = [line.split("//")[0].strip() for line in ptx.splitlines()]
    taint = {}
    changed = True
    while changed:                  # to a fixed point: loops assign registers again
        changed = False
        for line in lines:
            if not line or line[0] in ".{}$" or not line.endswith(";"):
                continue
            code = re.sub(r"^@!?%p\d+\s+", "", line)
            opcode, _, operands = code.partition(" ")
            if opcode.startswith(("st.", "bra", "ret", "bar", "setp")):
                continue
            first, _, rest = operands.partition(",")
            targets = [r for r in _REGISTER.findall(first) if not r.startswith("%p")]
            if opcode.startswith("ld.param"):
                found = {int(m) for m in _PARAM.findall(rest)}
            elif opcode.startswith("ld."):
                found = set()        # a value in memory, not an address
            else:
                found = set().union(*(taint.get(r, ()) for r in _REGISTER.findall(rest)
                                      if not r.startswith("%p")))
            for r in targets:
                if not found <= taint.get(r, set()):
                    taint[r] = taint.get(r, set()) | found
                    changed = True
    labels = {m.group(1): k for k, line in enumerate(lines) if (m := _LABEL.match(line))}
    loops = [(labels[m.group(1)], k) for k, line in enumerate(lines)
             for m in [_BRANCH.search(line)] if m and labels.get(m.group(1), k) < k]
    out = []
    for k, line in enumerate(lines):
        m = _MEMORY_OP.match(line)
        if not m:
            continue
        address = re.search(r"\[(%rd\d+)", line)
        params = taint.get(address.group(1), set()) if address else set()
        if arrays is not None:
            params = {p for p in params if p < 7 * arrays}
        inside = [(end - start, start) for start, end in loops if start <= k <= end]
        region = min(inside)[1] if inside else None
        out.append((region, m.group(1), max(params) // 7 if params else None,
                    _WIDTH[m.group(3)] * int(m.group(2) or 1)))
    return out


def reread(ops):
    """Loop accesses that break "once per element": a loop handles some
    number of elements per iteration (unrolled), so each array it loads must
    be loaded, and each it stores stored, that same number of times. Outside
    loops, each body (loads, then stores) must touch each array at most once."""
    if any(arg is None for _, arg in ops):
        return "an access whose array could not be traced"
    loads = collections.Counter(a for op, a in ops if op == "ld")
    stores = collections.Counter(a for op, a in ops if op == "st")
    if len(set(loads.values()) | set(stores.values())) > 1:
        return f"array: loads {dict(loads)}, stores {dict(stores)}"
    return None


def split_bodies(ops):
    """``ops`` (accesses outside loops) cut into bodies: a new one at each
    load that follows a store."""
    out = []
    for op, arg in ops:
        if not out or (op == "ld" and out[-1][-1][0] == "st"):
            out.append([])
        out[-1].append((op, arg))
    return out


def float64_instructions(ptx):
    """The distinct PTX instructions of ``ptx`` that operate on float64."""
    return sorted(set(_F64.findall(ptx)))
