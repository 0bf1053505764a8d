"""Crash-safe file writes: a file is replaced whole or not at all.

:func:`atomic_write` writes a temporary file in the target's directory,
flushes and fsyncs it, then renames it over the target (``os.replace``) and
fsyncs the directory, so a crash mid-write leaves the previous file intact.
The temporaries that killed writes of this machine left behind are removed
by the next write into that directory (:func:`remove_stale_temporaries`).
"""
import hashlib
import os
import re
import secrets
import socket
import stat

__all__ = ["atomic_write", "remove_stale_temporaries"]


def atomic_write(path, write):
    """Call ``write(f)`` on a new file beside ``path``, then move it to ``path``.

    ``path`` holds either its old content or the complete new one, never a
    part: the temporary is flushed to disk before ``os.replace``, and removed
    if ``write`` raises. A file already at ``path`` keeps its permission bits.
    A symbolic link at ``path`` (or on the way to it) is written through: the
    file it points to is replaced, in that file's directory, and the link
    stays. Temporaries left in the directory by writes of this machine whose
    process no longer exists (killed mid-write) are removed first, when they
    are zip files as ``np.savez`` and ``torch.save`` write.
    """
    path = os.path.realpath(os.fspath(path))
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(directory)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{_host_tag()}-{os.getpid()}."
                                  f"{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            pass
        else:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def remove_stale_temporaries(directory):
    """Remove the temporary files of :func:`atomic_write` in ``directory`` whose writing
    process, on this machine, is gone; return their names. Only regular files
    named as :func:`atomic_write` names them and holding nothing or the start of a zip
    file are touched. Best effort: a file that cannot be removed is left (and
    nothing is removed on Windows, where a process cannot be probed safely)."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    tag = _host_tag()
    for name in names:
        match = _TEMPORARY.match(name)
        if match is None or match["host"] not in (None, tag):
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _process_exists(pid):
            continue
        full = os.path.join(directory, name)
        try:
            if stat.S_ISREG(os.lstat(full).st_mode) and _looks_like_a_partial_save(full):
                os.unlink(full)
                removed.append(name)
        except OSError:
            pass
    return removed


def _looks_like_a_partial_save(path):
    """Empty, or starting as a zip file does: what np.savez leaves when killed."""
    with open(path, "rb") as f:
        head = f.read(4)
    return b"PK\x03\x04".startswith(head)


def _process_exists(pid):
    if pid <= 0 or os.name == "nt":
        return True             # not a process id, or no safe probe: leave the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True             # another user's process, or cannot tell
    return True


def _fsync_directory(directory):
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _host_tag():
    """A short tag of this machine's name: temporaries of another machine
    sharing the directory (NFS) are never taken for this machine's."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


# .<target name>.<host tag>-<pid>.<random>.tmp; the tag is absent in files
# written before it was added.
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?:(?P<host>[0-9a-f]{8})-)?(?P<pid>\d+)"
                        r"\.[0-9a-f]{8}\.tmp$")
