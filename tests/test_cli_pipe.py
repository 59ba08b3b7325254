"""Every command stops quietly when its reader goes away (``... | head``)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = [
    ["capacity.optimize", "--d1", "50000", "--d2", "5000", "--budget", "10000"],
    ["capacity.pieces", "examples/net.json", "--json"],
    ["capacity.witnesses", "--json"],
    ["proofs", "--only", "c02", "--json", "--no-write"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_closed_stdout_is_not_a_traceback(command):
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_wrapper_passes_status_and_arguments_through():
    from capacity.cli import quiet_broken_pipe

    @quiet_broken_pipe
    def main(argv=None):
        """doc"""
        return len(argv)

    assert main(["a", "b"]) == 2 and main.__doc__ == "doc"
