"""Checks the commands share before they start simulating (hwsim run, compare, sweep, goodput).

An output path that cannot be written is found up front, as a ConfigError naming the flag and
the fix, not as a traceback after minutes of simulation.
"""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

from hwsim.errors import ConfigError

__all__ = ["check_out_dir"]


def check_out_dir(path: Path | None, flag: str = "--out") -> None:
    """Raise ConfigError unless `path` is a directory that exists and can be written, or can be
    created (its nearest existing parent is a writable directory). Creates nothing."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is a file, not a directory; {flag} names a directory for the "
                          f"outputs. Give a new or existing directory (e.g. {flag} {path.with_suffix('')}-out), "
                          f"or move the file away")
    probe = path
    while not probe.exists():   # the nearest parent that exists: where mkdir would start
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{flag} {path}: {probe} is a file, so no directory can be made under it; give a "
                          f"directory path whose parents are directories")
    try:   # really try: permission bits, a read-only file system, /proc and root all answer here
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".hwsim-write-check-"):
            pass
    except OSError as exc:
        reason = ("that file system takes no new files" if exc.errno == errno.ENOENT
                  else exc.strerror or type(exc).__name__)
        where = "" if probe == path else f" (in {probe}, where it would be created)"
        raise ConfigError(f"{flag} {path}: cannot write there{where}: {reason}. Give a directory you can "
                          f"write, e.g. {flag} ./out") from None
