"""Command-line errors in one line: what was refused, its value and what is allowed.

Every entry point (``python -m ih_assets.main_job``, ``ih-pipeline``, ``python -m resources.seaweed``)
parses with :class:`OneLineParser` and runs its body through :func:`run_reporting`. A refused
setting or input (``ValueError``, ``OSError``: the pipeline's input errors derive from them and
name the variable or file) prints ``<prog>: error: <message>`` on stderr and exits 2; any other
exception prints one line with its type and exits 1. A user who wants the traceback adds
``--debug`` anywhere on the command line or sets ``IH_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn

DEBUG_FLAG = "--debug"
DEBUG_ENV = "IH_DEBUG"


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether tracebacks are wanted (``--debug`` in ``argv`` or ``IH_DEBUG``), and ``argv`` without the flag."""
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")
    return debug, [a for a in argv if a != DEBUG_FLAG]


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line (the usage block is what ``--help`` is for)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def one_line(exc: BaseException) -> str:
    """The exception's first line; says so when more was cut (multi-line messages quote logs)."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    more = f" (+{len(lines) - 1} more lines with {DEBUG_FLAG})" if len(lines) > 1 else ""
    return lines[0] + more


def run_reporting(body: Callable[[], int], prog: str, debug: bool) -> int:
    """``body()``'s exit code; an exception becomes one line on stderr (see the module docstring)."""
    if debug:
        return body()
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug or an outside failure: still one line, the traceback on request
        print(f"{prog}: error: {type(exc).__name__}: {one_line(exc)} ({DEBUG_FLAG} or {DEBUG_ENV}=1 shows the traceback)",
              file=sys.stderr)
        return 1
