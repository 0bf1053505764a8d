"""How a driver's arrays are stored: the storage codes, :class:`Layout`,
and the storage functions a layout driver calls.

A driver of ``loops.py`` runs on arrays all in the compute dtype, or on a
:class:`Layout`: one storage code per array (16-bit floats as their bits,
8-bit state in either format), a master copy of the parameter (float32 or
split) and stochastic rounding. Each layout's driver loads an element through
a widening conversion and stores it through a narrowing one, calling the
functions of :data:`STORAGE_FUNCTIONS`: 16-bit conversions and random bits
(``convert16.py``), the blockwise and companded 8-bit codes
(``blockwise8.py``, ``companded8.py``) and the split master's codecs
(``split_master.py``).
"""
from typing import NamedTuple

from . import blockwise8, companded8, convert16, split_master

#: Storage codes of one array in a :class:`Layout`: the compute dtype itself
#: (float32 or float64), bfloat16 or float16 (both as ``uint16`` bits), or
#: 8-bit blockwise codes (a state array only: ``uint8`` codes, one float32
#: absmax per block of ``blockwise8.BLOCK`` elements, the code's map and thresholds
#: (``blockwise8.tables``: two halves of 256) and its two bucket tables of 65536:
#: see ``blockwise8.nearest_code_bucketed``).
NATIVE, BFLOAT16, FLOAT16, BLOCKWISE8 = "f", "b", "h", "q"
#: Companded 8-bit codes (a state array only: ``uint8`` codes and one float32
#: scale per group of ``companded8.GROUP`` elements, decoded and encoded by arithmetic:
#: signed softsign, or the fourth root of a non-negative state; see
#: ``companded8.softsign_encode`` / ``root_encode``).
SOFTSIGN8, ROOT8 = "c", "r"
COMPANDED = (SOFTSIGN8, ROOT8)
#: A :class:`Layout`'s ``master`` when split: the driver's ``master`` is the
#: 16-bit correction (``int16`` bits as ``uint16``: the master is exact) or the
#: 8-bit one (``int8`` bits as ``uint8``: a 24-bit master) of a bfloat16
#: ``param`` (see ``split_master.split16_join`` / ``split8_low``).
SPLIT16, SPLIT8 = "16", "8"


class Layout(NamedTuple):
    """How a driver's arrays are stored, when not all in the compute dtype.

    ``codes`` has one storage code per element array, in the driver's order
    (``param``, ``grad``, the state arrays); ``master``: the driver takes a
    float32 ``master`` array after them, on which the update runs, and
    ``param`` receives it rounded to nearest (``True``), or ``SPLIT16`` /
    ``SPLIT8``: ``master`` is a correction that with the bfloat16 ``param``
    makes the master (``split_master.split16_join`` / ``split8_join``), and both
    receive the new master's split (``param`` its nearest rounding, ties away
    from zero); ``stochastic``: ``param`` (bfloat16
    or float16) is stored with stochastic rounding from the bits of the stream
    ``(key0, key1)``, two uint64 arguments after ``scalars``, at index
    ``offset + i`` for element ``i`` (``offset``, an int64 argument after them:
    where ``param`` starts in a larger array whose bits one call would draw).
    """
    codes: tuple
    master: object = False
    stochastic: bool = False

    @property
    def plain(self):
        return not self.master and not self.stochastic and set(self.codes) <= {NATIVE}

    @property
    def tag(self):
        """A short name for qualnames: the codes, then ``m`` / ``s`` when set."""
        master = ("m" + ("" if self.master is True else self.master)) if self.master else ""
        return "".join(self.codes) + master + \
            ("s" if self.stochastic else "")


#: The storage functions a layout driver calls, by the name it calls them:
#: the module that holds each one and its name there (compiled; the module's
#: ``PYTHON`` holds its plain-Python twin under the same name).
STORAGE_FUNCTIONS = {
    "bf16_to_f32": (convert16, "bfloat16_to_float32"),
    "f32_to_bf16": (convert16, "float32_to_bfloat16"),
    "f16_to_f32": (convert16, "half_to_float32"), "f32_to_f16": (convert16, "float32_to_half"),
    "f32_to_bf16_stochastic": (convert16, "float32_to_bfloat16_stochastic"),
    "f32_to_f16_stochastic": (convert16, "float32_to_half_stochastic"),
    "random_bits": (convert16, "random_bits"), "page_base": (convert16, "page_base"),
    "page_bits": (convert16, "page_bits"),
    "nearest_code": (blockwise8, "nearest_code_bucketed"),
    "magnitude_bits": (convert16, "magnitude_bits"),
    "bits_to_float32": (convert16, "bits_to_float32"),
    "float32_to_bits": (convert16, "float32_to_bits"),
    "softsign_decode": (companded8, "softsign_decode"),
    "softsign_encode": (companded8, "softsign_encode"),
    "root_decode": (companded8, "root_decode"), "root_encode": (companded8, "root_encode"),
    "softsign_scaling": (companded8, "softsign_scaling"),
    "root_scaling": (companded8, "root_scaling"), "root_of": (companded8, "root_of"),
    "softsign_special": (companded8, "softsign_special"),
    "root_special": (companded8, "root_special"),
    "split16_join": (split_master, "split16_join"),
    "split16_high": (split_master, "split16_high"),
    "split16_low": (split_master, "split16_low"),
    "split8_join": (split_master, "split8_join"), "split8_high": (split_master, "split8_high"),
    "split8_low": (split_master, "split8_low")}
#: The modules that hold them: the drivers' code depends on each (see
#: ``loops.source_hash``).
STORAGE_MODULES = (convert16, blockwise8, companded8, split_master)


def storage_vocabulary(python=False):
    """``STORAGE_FUNCTIONS`` bound to the compiled functions, or with
    ``python`` to their plain-Python twins (each module's ``PYTHON``)."""
    return {name: getattr(module.PYTHON if python else module, f)
            for name, (module, f) in STORAGE_FUNCTIONS.items()}
