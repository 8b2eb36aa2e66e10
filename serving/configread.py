"""Reading a config file safely, for `load_config`, `start_server` and the supervisor's file watcher.

Only regular files are read (symlinks followed), never a FIFO (a read would block), a device (`/dev/zero`
never ends) or a directory: the file is checked before it is opened, opened without blocking, checked
again, and read up to its limit plus one byte, so a file that grows in between, or claims a size of 0 as
/proc files do, is refused too. It imports no Django and nothing of ours: the supervisor uses it.
"""
from __future__ import annotations

import os
import stat

DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # GATEWAY_CONFIG_MAX_BYTES


class ConfigFileError(ValueError):
    """The file cannot be read as a config document; the message says why, without its content."""


def read_config_bytes(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The content of the regular file at `path` (symlinks followed), at most `max_bytes` of it.
    Raises FileNotFoundError if it does not exist, ConfigFileError if it is not a regular file or too
    large, OSError if it cannot be read."""
    info = os.stat(path)
    _check_regular(info, max_bytes)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        _check_regular(os.fstat(fd), max_bytes)  # the path may have been swapped since the stat
        chunks = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise ConfigFileError(_too_large(max_bytes))
    return data


def _check_regular(info: os.stat_result, max_bytes: int) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise ConfigFileError("this is a directory, not a YAML file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigFileError("not a regular file (a FIFO, a socket or a device): refused")
    if info.st_size > max_bytes:
        raise ConfigFileError(_too_large(max_bytes))


def _too_large(max_bytes: int) -> str:
    return f"larger than the {max_bytes} bytes allowed (GATEWAY_CONFIG_MAX_BYTES)"
