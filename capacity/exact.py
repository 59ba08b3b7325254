"""Exact numbers: the one place where user values become ints or Fractions.

Floats are refused on purpose: a bound evaluated at 0.1 is a bound at
0.1000000000000000055511151231257827..., not at 1/10. Pass Fraction(1, 10) or "1/10".
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from fractions import Fraction
from numbers import Integral, Rational
from typing import Iterator

Exact = int | Fraction


#: Most digits of a number in a *string* that ``as_exact`` parses (ints and Fractions are
#: taken at any size): text <-> int conversion takes quadratic time, 10,000 digits take
#: milliseconds, a million take minutes.
MAX_DIGITS = 10_000


@contextmanager
def int_digit_limit(limit: int) -> Iterator[None]:
    """Set Python's int <-> str digit limit (4300 by default since 3.11) inside the block.

    0 lifts it: the package promises exact numbers of any size, and the limit exists to
    stop quadratic-time conversions of untrusted text, which the commands bound themselves.

    Example:
        >>> with int_digit_limit(0):
        ...     len(str(10 ** 5000))
        5001
    """
    get = getattr(sys, "get_int_max_str_digits", None)
    if get is None:  # Python without the limit
        yield
        return
    previous = get()
    sys.set_int_max_str_digits(limit)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(previous)


def unlimited_digits():
    """``int_digit_limit(0)``: exact numbers of any size print and parse inside the block."""
    return int_digit_limit(0)


def as_exact(value: object, name: str = "value") -> Exact:
    """Return ``value`` as an int or a Fraction, refusing anything inexact.

    Args:
        value: an int (also numpy's), a Fraction (or other Rational), or a string "n" / "p/q".
        name: how the value is called in error messages.

    Returns:
        An int when the value is integral, else a Fraction in lowest terms.

    Raises:
        ValueError: for floats, bools, malformed or too long strings (``MAX_DIGITS``) and
            other types.

    Example:
        >>> as_exact("14999/2")
        Fraction(14999, 2)
        >>> as_exact("10/5")
        2
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an exact number, got the bool {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, Integral):  # numpy integers and the like
        return int(value)
    if isinstance(value, Rational):
        frac = Fraction(int(value.numerator), int(value.denominator))
    elif isinstance(value, str):
        if len(value) > 2 * MAX_DIGITS + 2:
            raise ValueError(f"{name} is a string of {len(value):,} characters; at most "
                             f"{MAX_DIGITS:,} digits per number are read from text")
        try:
            with unlimited_digits():
                frac = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name} must be an integer or a fraction p/q, got {value!r}") from None
        if "." in value or "e" in value.lower():
            raise ValueError(f"{name} must be an integer or a fraction p/q, got {value!r}")
    else:
        raise ValueError(
            f"{name} must be an int, a Fraction or a 'p/q' string, got {type(value).__name__} {value!r}"
        )
    return frac.numerator if frac.denominator == 1 else frac


def as_count(value: object, name: str = "value", minimum: int = 0) -> int:
    """Return ``value`` as an int >= ``minimum``; strings like "10**50" are not parsed.

    Raises:
        ValueError: when the value is not an integer or is below ``minimum``.

    Example:
        >>> as_count("5000", "d2", minimum=1)
        5000
    """
    exact = as_exact(value, name)
    if not isinstance(exact, int):
        raise ValueError(f"{name} must be an integer, got {exact_str(exact)}")
    if exact < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {exact}")
    return exact


def exact_str(value: Exact) -> str:
    """Format an exact number the way the JSON interfaces do: "7500" or "14999/2".

    Example:
        >>> exact_str(Fraction(14999, 2))
        '14999/2'
    """
    with unlimited_digits():
        if isinstance(value, Fraction) and value.denominator != 1:
            return f"{value.numerator}/{value.denominator}"
        return str(int(value))


def exact_float(value: Exact) -> float:
    """Nearest float of an exact number (for display only); huge values become inf-safe.

    Example:
        >>> exact_float(Fraction(1, 3))
        0.3333333333333333
    """
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")
