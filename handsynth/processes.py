"""Is a recorded process still the one that was recorded? (pids are reused, so the start time counts.)

Locks, leases and server pid files name their holder by pid and start time; a later process
decides from these whether the holder was killed and its claim can be taken over.
"""

from __future__ import annotations

import os


def process_start(pid: int) -> str:
    """Start time of ``pid`` in clock ticks since boot (tells a reused pid apart); '' if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_alive(pid: int, start: str = "") -> bool:
    """Whether ``pid`` runs (not a zombie) and is the process that started at ``start`` ('' = any)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    return not start or process_start(pid) in ("", start)
