"""Helpers of the hostile-input tests (tests/test_hostile_*.py): run a real command in a
subprocess (optionally as the unprivileged user ``nobody``), and check the contract every
command keeps for bad input: the documented exit code, exactly one line on stderr naming the
problem, no traceback, and no file changed, created or deleted."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Run a command as ``nobody`` (root in CI: permission bits do not stop root).
DROP = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
CAN_DROP = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("setpriv") is not None


def run(module: str, *args: str, cwd: Path | None = None, as_nobody: bool = False,
        env: dict | None = None, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``python -m module args`` in a subprocess, text output captured."""
    command = [sys.executable, "-m", module, *map(str, args)]
    if as_nobody:
        command = [*DROP, *command]
    full_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    kwargs.setdefault("capture_output", True)
    return subprocess.run(command, cwd=cwd or ROOT, env=full_env, text=True, timeout=timeout,
                          **kwargs)


def snapshot(*roots: Path) -> dict:
    """Every file and directory under ``roots``: kind, mode, size and content digest."""
    state = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                info = path.lstat()
                digest = ""
                if path.is_file() and not path.is_symlink() and info.st_mode & 0o444:
                    try:
                        digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    except OSError:
                        digest = "unreadable"
                state[str(path)] = (info.st_mode, info.st_size, digest)
    return state


def one_error_line(proc: subprocess.CompletedProcess, prog: str, code: int = 2,
                   fragment: str = "") -> str:
    """Assert the user-error contract on a finished command; return the line."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@contextmanager
def world(mode: int = 0o755):
    """A temporary directory that ``nobody`` can enter (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="hostile-"))
    path.chmod(mode)
    try:
        yield path
    finally:
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:  # let rmtree into directories made unreadable on purpose
                os.chmod(Path(dirpath) / name, 0o755)
        shutil.rmtree(path, ignore_errors=True)


def write(path: Path, content: str | bytes | object, mode: int = 0o644) -> Path:
    """Write text, bytes or JSON (anything else) to ``path`` with ``mode``; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))
    path.chmod(mode)
    return path


#: The in-process driver: runs ``main(argv)`` of a command for many argument lists in one
#: Python process (one torch import for all of them), each with stdout and stderr captured.
DRIVER = r"""
import contextlib, importlib, io, json, sys, traceback
cases = json.load(sys.stdin)
results = []
for case in cases:
    sys.path[:0] = case.get("path", [])
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = importlib.import_module(case["module"]).main(case["argv"])
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            code = "exception"
            traceback.print_exc(file=err)
    results.append({"code": code, "stderr": err.getvalue(), "stdout": out.getvalue()})
print(json.dumps(results))
"""


def run_in_one_process(cases: list[dict], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run ``{"module", "argv", "path"?}`` cases through :data:`DRIVER` in one subprocess;
    one CompletedProcess-like result per case, in order."""
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(cases), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [subprocess.CompletedProcess(case["argv"], r["code"], r["stdout"], r["stderr"])
            for case, r in zip(cases, json.loads(proc.stdout.splitlines()[-1]))]


def assert_help_complete(parser) -> str:
    """Every option of ``parser`` has help text and the help ends with the exit codes."""
    import argparse

    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help and action.help != argparse.SUPPRESS, action.option_strings
    text = parser.format_help()
    for line in ("exit codes:", "  0    ok", "  1    ", "  2    user error", "  130  interrupted"):
        assert line in text, line
    return text


def table(cases: list[tuple]):
    """``pytest.mark.parametrize`` over rows (id, argv, fragment)."""
    import pytest

    return pytest.mark.parametrize("argv, fragment", [c[1:] for c in cases],
                                   ids=[c[0] for c in cases])


def refused(module: str, prog: str, argv: list, fragment: str, files: Path | None = None,
            **kwargs) -> str:
    """Run the command; assert the user-error contract, an empty stdout and, when ``files``
    is given (also the working directory), that nothing under it changed."""
    before = snapshot(files) if files is not None else None
    proc = run(module, *argv, cwd=files, timeout=kwargs.pop("timeout", 60), **kwargs)
    line = one_error_line(proc, prog, 2, fragment)
    assert proc.stdout == "", proc.stdout[-500:]
    if files is not None:
        assert snapshot(files) == before
    return line
