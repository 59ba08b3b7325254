"""What every command of the package shares: a reader that goes away is not an error.

``python -m proofs --json | head`` closes the pipe after a few lines; the command then stops
quietly with exit code 1 (like other Unix tools) instead of printing a BrokenPipeError
traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable


def quiet_broken_pipe(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's ``main`` so that a closed stdout ends it with status 1, silently."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            status = main(*args, **kwargs)
            sys.stdout.flush()
            return status
        except BrokenPipeError:
            # Python flushes stdout again at exit; point it at /dev/null so that flush succeeds
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1

    return wrapper
