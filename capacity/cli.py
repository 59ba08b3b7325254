"""What every command of the package shares: one error style, checked values and paths.

Every command (``capacity.optimize``, ``capacity.pieces``, ``capacity.witnesses``,
``proofs``, ``snl_train``, ``snl_train.experiments``, ``figures``) uses these pieces, so a
new option gets the same checks and the same messages for free:

- exit codes: 0 ok, 1 failure, 2 user error, 130 interrupted (``exit_codes`` is the
  paragraph each ``--help`` ends with);
- user errors: ONE line on stderr, ``python -m X: error: ...``, and for a bad option
  ``(see --help)`` at its end (``CommandParser``, ``command``); newlines in a message are
  escaped and long values shortened, so the line stays one readable line;
- option values: ``integer``, ``number`` (finite), ``integer_list`` as argparse types;
- paths: ``check_input_file``, ``check_input_dir``, ``check_output_file``,
  ``check_output_dir`` say what is wrong before any work starts;
- JSON input: ``read_json`` bounds size, nesting and digits, accepts a UTF-8 BOM and
  refuses other encodings with one line;
- a reader that goes away (``... | head``) stops a command quietly with status 1, and a
  closed stdout or stderr at start-up is pointed at /dev/null.

Imports only the standard library (``python -m capacity.optimize`` must start fast).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from capacity.exact import MAX_DIGITS, int_digit_limit, unlimited_digits

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A user error: reported as one line on stderr with exit code 2."""


class _TooManyDigits(ValueError):
    """A number longer than ``MAX_DIGITS`` digits."""


# ----------------------------------------------------------------------------- messages


def one_line(text: str, limit: int = 600) -> str:
    """``text`` as one line: line breaks and control characters escaped, at most ``limit`` chars.

    Example:
        >>> one_line("a\\nb")
        'a\\\\nb'
    """
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], str(text))
    return text if len(text) <= limit else f"{text[:limit - 25]}... ({len(text):,} characters)"


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` for a message, shortened when long (a 5,000-digit number stays readable).

    Example:
        >>> shown("9" * 100)
        "'99999999999999999999'... (100 characters)"
    """
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit // 2]!r}... ({len(text):,} characters)"


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def report_error(prog: str, message: str) -> int:
    """Print ``prog: error: message`` as one line on stderr; return ``EXIT_USAGE``."""
    sys.stderr.write(f"{prog}: error: {one_line(message)}\n")
    sys.stderr.flush()
    return EXIT_USAGE


def exit_codes(failure: str = "failure") -> str:
    """The paragraph that ends every ``--help``: what each exit code means for the command."""
    return ("exit codes:\n  0    ok\n"
            f"  1    {failure}\n"
            "  2    user error (one line on stderr)\n"
            "  130  interrupted (Ctrl-C)")


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``UsageError``) and whose help ends
    with the exit codes.

    Args:
        prog: the command as typed, e.g. ``"python -m capacity.optimize"``.
        failure: what exit code 1 means for this command.
        epilog: text printed before the exit codes (examples), kept as written.
    """

    def __init__(self, prog: str, *, failure: str = "failure", epilog: str | None = None,
                 **kwargs) -> None:
        text = exit_codes(failure) if not epilog else f"{epilog}\n\n{exit_codes(failure)}"
        super().__init__(prog=prog, epilog=text,
                         formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message: str):  # argparse would print the usage block, then exit 2
        raise UsageError(f"{message} (see --help)")


def command(prog: str, speaks: Callable[[], bool] = lambda: True):
    """Decorate a command's ``main(argv) -> int`` with the shared behaviour.

    A ``UsageError`` becomes one line and exit 2, Ctrl-C exit 130, a reader that went away
    (BrokenPipeError) a quiet exit 1; a closed stdout/stderr at start-up is reopened on
    /dev/null so that nothing the command opens lands on descriptor 1 or 2.
    ``speaks() -> False`` silences the messages (the non-zero ranks of a torchrun job).
    """

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapper(*args, **kwargs) -> int:
            _reopen_closed_std_streams()
            try:
                status = main(*args, **kwargs)
                sys.stdout.flush()
                return status
            except UsageError as exc:
                return report_error(prog, str(exc)) if speaks() else EXIT_USAGE
            except KeyboardInterrupt:
                if speaks():
                    sys.stderr.write(f"{prog}: interrupted\n")
                return EXIT_INTERRUPTED
            except MemoryError:
                if speaks():
                    sys.stderr.write(f"{prog}: error: out of memory\n")
                return EXIT_FAILURE
            except BrokenPipeError:
                _silence_stdout()
                return EXIT_FAILURE

        return wrapper

    return decorate


def quiet_broken_pipe(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's ``main`` so that a closed stdout ends it with status 1, silently."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            status = main(*args, **kwargs)
            sys.stdout.flush()
            return status
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_FAILURE

    return wrapper


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that flush succeeds
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    finally:
        os.close(devnull)


def _reopen_closed_std_streams() -> None:
    """Give a closed descriptor 1 or 2 to /dev/null (else the next file opened would get it)."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        if getattr(sys, name) is None:  # Python found the descriptor closed at start-up
            setattr(sys, name, open(fd, "w", closefd=False))


def tolerant_printer(stream_name: str = "stdout") -> Callable[[str], None]:
    """A ``print``-like function for log lines that keeps the program running when the
    reader goes away: after the first failed write it prints nothing more.

    Example:
        >>> say = tolerant_printer()
        >>> say("hello")
        hello
    """
    alive = [True]

    def say(line: str) -> None:
        stream = getattr(sys, stream_name)
        if not alive[0] or stream is None:
            return
        try:
            print(line, file=stream, flush=True)
        except (OSError, ValueError):  # broken pipe, closed file
            alive[0] = False
            if stream_name == "stdout":
                _silence_stdout()

    return say


# ----------------------------------------------------------------------------- values

_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_integer(text: str, name: str = "value") -> int:
    """An int from decimal text, with at most ``MAX_DIGITS`` digits (any size below that).

    Raises:
        ValueError: not a plain decimal integer ("1.5", "1e3", "0x10", "1_000"), or too long.

    Example:
        >>> parse_integer(" 12 ")
        12
    """
    text = str(text).strip()
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{name} must be an integer, got {shown(text)}")
    if len(text.lstrip("+-")) > MAX_DIGITS:
        raise _TooManyDigits(f"{name} has {len(text.lstrip('+-')):,} digits; at most {MAX_DIGITS:,} "
                         "are accepted")
    with unlimited_digits():
        return int(text)


def _range_text(minimum, maximum, above=None, below=None) -> str:
    """ "in [0, 1)", ">= 1", "< 5" or "" for inclusive (minimum, maximum) or exclusive
    (above, below) limits."""
    low = f"[{minimum}" if minimum is not None else (f"({above}" if above is not None else None)
    high = f"{maximum}]" if maximum is not None else (f"{below})" if below is not None else None)
    if low and high:
        return f"in {low}, {high}"
    if low:
        return (">= " if low[0] == "[" else "> ") + low[1:]
    if high:
        return ("<= " if high[-1] == "]" else "< ") + high[:-1]
    return ""


def integer(minimum: int | None = None, maximum: int | None = None,
            why: str = "") -> Callable[[str], int]:
    """An argparse type: a decimal integer in [minimum, maximum] (either may be None).

    ``why`` is appended to the out-of-range message (e.g. what to use instead).

    Example:
        >>> integer(1)("5")
        5
    """
    expected = "an integer" + (f" {_range_text(minimum, maximum)}" if
                               minimum is not None or maximum is not None else "")

    def parse(text: str) -> int:
        try:
            value = parse_integer(text)
        except _TooManyDigits as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {shown(text)}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {_range_text(minimum, maximum)}, got "
                                             f"{shown(text)}{why}")
        return value

    parse.__name__ = "integer"
    return parse


def number(minimum: float | None = None, maximum: float | None = None, *,
           above: float | None = None, below: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite float with inclusive (minimum, maximum) or exclusive
    (above, below) limits; NaN and infinities are refused.

    Example:
        >>> number(0, below=1)("0.01")
        0.01
    """
    limits = _range_text(minimum, maximum, above, below)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {shown(text)}") from None
        ok = math.isfinite(value)
        ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
        ok = ok and (above is None or value > above) and (below is None or value < below)
        if not ok:
            need = limits + (" and finite" if limits and not math.isfinite(value) else "")
            raise argparse.ArgumentTypeError(f"must be {need or 'finite'}, got {shown(text)}")
        return value

    parse.__name__ = "number"
    return parse


def integer_list(minimum: int = 1, maximum: int | None = None, max_items: int | None = None,
                 empty: bool = False) -> Callable[[str], tuple[int, ...]]:
    """An argparse type: comma-separated integers, each in [minimum, maximum].

    ``empty`` admits "" (an empty tuple). Example:
        >>> integer_list()("256,64")
        (256, 64)
    """
    item = integer(minimum, maximum)
    kinds = {(1, None): "positive integers", (0, None): "non-negative integers",
             (1, 2**31 - 1): "positive integers below 2^31"}
    what = "comma-separated " + kinds.get((minimum, maximum),
                                          f"integers {_range_text(minimum, maximum)}")

    def parse(text: str) -> tuple[int, ...]:
        if empty and not text.strip():
            return ()
        parts = text.split(",")
        if max_items is not None and len(parts) > max_items:
            raise argparse.ArgumentTypeError(f"at most {max_items:,} values, got {len(parts):,}")
        try:
            return tuple(item(part) for part in parts)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {shown(text)}") from None

    parse.__name__ = "integer_list"
    return parse


# ----------------------------------------------------------------------------- paths


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def check_input_file(path: str | os.PathLike, what: str = "input file") -> Path:
    """The path of a readable regular file, or UsageError saying what it is instead.

    Example:
        >>> check_input_file("/nonexistent/net.json")
        Traceback (most recent call last):
        capacity.cli.UsageError: cannot read input file /nonexistent/net.json: it does not exist
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"cannot read {what} {path}: it does not exist")
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory, expected a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return path


def check_input_dir(path: str | os.PathLike, what: str = "directory") -> Path:
    """The path of a readable, listable directory, or UsageError."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise UsageError(f"{what} {path} is a file, expected a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"cannot read {what} {path}: permission denied")
    return path


def _check_creatable(path: Path, what: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a writable directory."""
    base = _nearest_existing(path.parent if path.parent != path else path)
    if not base.is_dir():
        raise UsageError(f"{what} {path} is inside {base}, which is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what} {path}: permission denied in {base}")


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """A path a file can be written to (created with its directories if needed), or UsageError.

    Refuses a directory, a path inside a file, and unwritable files or directories.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory, expected a file name")
    if os.path.lexists(path):
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write {what} {path}: permission denied")
        return path
    _check_creatable(path, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """A directory files can be written in (created if needed), or UsageError."""
    path = Path(path)
    if os.path.lexists(path):
        if not path.is_dir():
            raise UsageError(f"{what} {path} is a file, expected a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write in {what} {path}: permission denied")
        return path
    _check_creatable(path, what)
    return path


# ----------------------------------------------------------------------------- JSON


def read_text(path: str | os.PathLike, what: str = "text file", *, max_bytes: int = 64 << 20) -> str:
    """The UTF-8 text of a file, read defensively; every problem is one UsageError line.

    At most ``max_bytes`` bytes are read (``/dev/zero`` or a huge file stops there); a UTF-8
    BOM is skipped; UTF-16/32 and invalid UTF-8 are refused.

    Example:
        >>> read_text("/nonexistent.txt", "cost profile")
        Traceback (most recent call last):
        capacity.cli.UsageError: cannot read cost profile /nonexistent.txt: it does not exist
    """
    path = check_input_file(path, what)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)  # bounded: /dev/zero or a huge file stops here
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise UsageError(f"{what} {path} has more than {max_bytes:,} bytes, the most it may have")
    return _decode(raw, path, what)


def read_json(path: str | os.PathLike, what: str = "JSON file", *, max_bytes: int = 64 << 20,
              max_depth: int = 64, allow_nan: bool = False) -> Any:
    """Parse a JSON file defensively; every problem is one UsageError line naming the file.

    Bounds: at most ``max_bytes`` bytes, ``max_depth`` levels of nesting and ``MAX_DIGITS``
    digits per integer. A UTF-8 BOM is skipped; UTF-16/32 and invalid UTF-8 are refused.
    NaN and Infinity (not JSON, but written by Python) only with ``allow_nan``.

    Example:
        >>> read_json("/nonexistent.json")
        Traceback (most recent call last):
        capacity.cli.UsageError: cannot read JSON file /nonexistent.json: it does not exist
    """
    text = read_text(path, what, max_bytes=max_bytes)
    if _nesting_exceeds(text, max_depth):
        raise UsageError(f"{what} {path} is nested more than {max_depth} levels deep")
    try:
        with int_digit_limit(max(MAX_DIGITS, 640)):  # C-speed parsing, bounded digits
            return json.loads(text, parse_constant=_json_constant(allow_nan))
    except _JSONLimit as exc:
        raise UsageError(f"{what} {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}") from None
    except ValueError:  # the int digit limit
        raise UsageError(f"{what} {path}: a number has more than {MAX_DIGITS:,} digits, the "
                         "most accepted") from None
    except RecursionError:
        raise UsageError(f"{what} {path} is nested too deeply") from None


class _JSONLimit(ValueError):
    """A constant in a JSON file that the reader refuses."""


def _decode(raw: bytes, path: Path, what: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        raise UsageError(f"{what} {path} is UTF-16 or UTF-32 (it starts with a byte-order "
                         "mark); save it as UTF-8")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                         f"offset {exc.start})") from None


def _json_constant(allow: bool) -> Callable[[str], float]:
    def parse(name: str) -> float:
        if not allow:
            raise _JSONLimit(f"{name} is not a number JSON allows")
        return float(name)

    return parse


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def _nesting_exceeds(text: str, max_depth: int) -> bool:
    """Whether the JSON text nests deeper than ``max_depth``; regex passes at C speed.

    With strings removed and only brackets kept, each pass deletes the innermost pairs,
    so the number of passes that still change something is the depth.
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    for _ in range(max_depth):
        if not brackets:
            return False
        brackets, removed = _INNERMOST.subn("", brackets)
        if not removed:  # unbalanced: json.loads reports it
            return False
    return bool(brackets)


# ----------------------------------------------------------------------------- time


@contextmanager
def time_limit(seconds: float, message: str) -> Iterator[None]:
    """Stop the block with ``UsageError(message)`` after ``seconds`` of wall time (0: never).

    Uses SIGALRM, so it works in the main thread of a Unix process (elsewhere: no limit).
    """
    import signal  # here: most commands never need it, and each import costs start-up time

    usable = seconds > 0 and hasattr(signal, "setitimer")
    if usable:
        try:
            previous = signal.signal(signal.SIGALRM, _alarm(message))
        except ValueError:  # not the main thread
            usable = False
    if not usable:
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _alarm(message: str):
    def handler(signum, frame):
        raise UsageError(message)

    return handler


# ----------------------------------------------------------------------------- writing


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory and
    ``os.replace``: a failed or interrupted write leaves the old file as it was.

    Raises:
        OSError: the directory cannot be written (the old file is kept).
    """
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
