"""Guarded reading of ``.npz`` files: arrays are read only as the caller
expects them, so a small crafted or damaged file can neither make the reader
allocate more than the expected arrays need nor pass for a good one.

A file holds a ``__meta__`` member (UTF-8 JSON in a uint8 array) and arrays
(``.npy`` members, no pickled objects); ``.npy`` has no bfloat16, so bfloat16
arrays are written as their ``uint16`` bits. :func:`read` checks every
member's zip entry (sizes that compression cannot produce, duplicates, other
compressions) and ``.npy`` header (dtype, shape) against the layout the
caller derives from the metadata before reading its data, and the bytes read
against the header and the CRC.
"""
import json
import os
import zipfile

import numpy as np

from . import _args, _storage

__all__ = ["read", "to_members", "Misfit", "META", "META_LIMIT"]

#: The member holding the metadata.
META = "__meta__"
#: Largest metadata member read (bytes, decompressed).
META_LIMIT = 64 << 20
#: Deflate cannot expand data by more than 1032:1; a zip entry that claims
#: more is a lie and is refused before it is read.
DEFLATE_RATIO = 1032


class Misfit(ValueError):
    """The file is readable but does not describe what is expected."""


def to_members(meta, arrays):
    """The ``np.savez`` keyword arguments that write the JSON-able ``meta`` and
    ``{member name: array}`` as :func:`read` reads them (JSON errors raise
    here, before any file is made)."""
    members = {META: np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)}
    members.update({k: a.view(np.uint16) if _storage.is_bfloat16(a.dtype) else a
                    for k, a in arrays.items()})
    return members


def read(path, layout):
    """``(meta, {member name: array})`` from the file at ``path``.

    ``layout(meta)`` returns ``{member name: (shape, dtype)}``, the arrays the
    file must hold given its metadata (a dict), and raises :class:`Misfit` (or
    ValueError) when the metadata itself is wrong. Raises
    ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` (its
    message naming ``path``: "does not fit" for a :class:`Misfit`) for a file
    that is not a complete, readable such file.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"{path} is not a fastadapt checkpoint (not an .npz file)")
        f.seek(0, os.SEEK_END)
        file_size = f.tell()
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as zf:
                members = _members(zf, file_size)
                if META not in members:
                    raise ValueError("no metadata")
                raw = _read_array(zf, members.pop(META), None, np.dtype(np.uint8),
                                  META_LIMIT)
                meta = json.loads(bytes(raw).decode("utf-8"))
                if not isinstance(meta, dict):
                    raise ValueError("metadata is not a JSON object")
                expected = layout(meta)
                unexpected = sorted(set(members) - set(expected))
                if unexpected:
                    raise Misfit(f"holds unexpected arrays {unexpected}")
                missing = sorted(set(expected) - set(members))
                if missing:
                    raise ValueError(f"arrays {missing} are missing")
                arrays = {}
                for key, (shape, dtype) in expected.items():
                    if _storage.is_bfloat16(dtype):     # written as its uint16 bits
                        arrays[key] = _read_array(zf, members[key], shape,
                                                  np.dtype(np.uint16), None).view(dtype)
                    else:
                        arrays[key] = _read_array(zf, members[key], shape, dtype, None)
        except Misfit as exc:
            raise ValueError(f"{path} does not fit: {exc}") from None
        except MemoryError:
            raise ValueError(f"{path}: its arrays do not fit in this machine's "
                             "memory") from None
        except Exception as exc:    # zipfile, zlib, EOF, JSON, KeyError, ...: all "unreadable"
            raise ValueError(f"{path} is not a readable fastadapt checkpoint "
                             f"({type(exc).__name__}: {exc})") from None
    return meta, arrays


def _members(zf, file_size):
    """``{array name: ZipInfo}``, refusing entries whose sizes are impossible."""
    members = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise Misfit(f"holds a member {info.filename!r} that is not an array")
        if info.compress_size > file_size:
            raise ValueError(f"member {info.filename!r} is larger than the file")
        if info.compress_type == zipfile.ZIP_STORED:
            plausible = info.file_size == info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            plausible = info.file_size <= DEFLATE_RATIO * info.compress_size + 1024
        else:
            raise ValueError(f"member {info.filename!r} uses an unsupported compression")
        if not plausible:
            raise ValueError(f"member {info.filename!r} claims {info.file_size} bytes "
                             f"from {info.compress_size}")
        name = info.filename[:-4]
        if name in members:
            raise ValueError(f"member {info.filename!r} appears twice")
        members[name] = info
    return members


def _read_array(zf, info, shape, dtype, limit):
    """The array of ``info``, after checking its ``.npy`` header (``shape``, or
    any 1-D shape when None, and ``dtype``) and the entry's size; reads exactly
    the declared bytes, and at most ``limit`` of them."""
    name = info.filename[:-4]
    fmt = np.lib.format
    with zf.open(info) as fp:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            got_shape, fortran, got_dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            got_shape, fortran, got_dtype = fmt.read_array_header_2_0(fp)
        else:
            raise ValueError(f"array {name!r} has .npy format {version}")
        if got_dtype != dtype or (shape is None and len(got_shape) != 1) \
                or (shape is not None and tuple(got_shape) != tuple(shape)) \
                or (fortran and len(got_shape) > 1):
            raise Misfit(f"array {name!r} is {got_dtype}{list(got_shape)}, expected "
                         f"{dtype}{list(shape) if shape is not None else '[n]'}")
        nbytes = _args.size(got_shape) * dtype.itemsize
        if limit is not None and nbytes > limit:
            raise ValueError(f"array {name!r} holds {nbytes} bytes, more than {limit}")
        if info.file_size != fp.tell() + nbytes:
            raise ValueError(f"array {name!r}: its zip entry holds {info.file_size} bytes, "
                             f"its header declares {fp.tell() + nbytes}")
        out = np.empty(got_shape, dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < nbytes:
            n = fp.readinto(view[done:])
            if not n:
                raise ValueError(f"array {name!r} is truncated")
            done += n
        if fp.read(1):                 # also makes zipfile check the CRC
            raise ValueError(f"array {name!r} is longer than its header declares")
    return out
