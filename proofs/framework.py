"""The claim registry, evidence records and the runner behind ``python -m proofs``.

A claim is a function that gathers *steps* of evidence: each step names its method
(sympy, z3 or exhaustive), says in one line what was checked and whether it held. A
claim passes when it has at least one step and every step held; an exception inside a
check is an error, which counts as a failure.

Example:
    >>> ev = Evidence()
    >>> ev.check("sympy", "1 + 1 = 2", 1 + 1 == 2)
    True
    >>> ev.verdict
    'pass'
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator

#: The methods a step may use; the table lists the ones a claim actually used.
METHODS = ("sympy", "z3", "exhaustive", "exact")

_FAIL_FAST: ContextVar[bool] = ContextVar("fail_fast", default=False)


class StepFailed(Exception):
    """Raised by ``Evidence.check`` inside ``fail_fast()`` at the first step that fails."""


@contextmanager
def fail_fast() -> Iterator[None]:
    """Stop a check at its first failing step (tests of wrong inputs need no more).

    Example:
        >>> try:
        ...     with fail_fast():
        ...         Evidence().check("exact", "1 = 2", 1 == 2)
        ... except StepFailed as err:
        ...     print(err)
        [exact] 1 = 2
    """
    token = _FAIL_FAST.set(True)
    try:
        yield
    finally:
        _FAIL_FAST.reset(token)


@dataclass(frozen=True)
class Step:
    """One piece of evidence: ``method`` checked ``text``; ``ok`` says whether it held."""

    method: str
    text: str
    ok: bool
    detail: str = ""


@dataclass
class Evidence:
    """The steps a check gathered, in order."""

    steps: list[Step] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    def check(self, method: str, text: str, ok: object, detail: object = "") -> bool:
        """Record a step and return whether it held.

        Raises:
            ValueError: when ``method`` is not one of ``METHODS``.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.steps.append(Step(method, text, bool(ok), str(detail)))
        if not ok and _FAIL_FAST.get():
            raise StepFailed(f"[{method}] {text}")
        return bool(ok)

    def note(self, finding: str) -> None:
        """Record a finding about the paper (an erratum, a missing condition)."""
        self.findings.append(finding)

    @property
    def verdict(self) -> str:
        """'pass' when there is evidence and all of it held, else 'fail'."""
        return "pass" if self.steps and all(s.ok for s in self.steps) else "fail"

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods used, in the order of ``METHODS``."""
        used = {s.method for s in self.steps}
        return tuple(m for m in METHODS if m in used)


@dataclass(frozen=True)
class Claim:
    """A registered claim.

    Attributes:
        id: short identifier, "c01", "c02", ...
        title: the claim in one line.
        paper: what the check says about the paper's own statement
            ("holds", "holds with conditions", "erratum", "not a theorem as stated", "new").
        page: file name of the claim's markdown page under ``proofs/pages``.
        check: the function that gathers the evidence.
    """

    id: str
    title: str
    paper: str
    page: str
    check: Callable[[], Evidence]


@dataclass(frozen=True)
class Outcome:
    """A claim after its check ran."""

    claim: Claim
    verdict: str
    evidence: Evidence
    seconds: float
    error: str = ""

    @property
    def methods(self) -> str:
        return " + ".join(self.evidence.methods) or "-"


REGISTRY: dict[str, Claim] = {}


def claim(id: str, title: str, paper: str, page: str) -> Callable:
    """Register the decorated zero-argument check function as a claim.

    Raises:
        ValueError: when ``id`` is registered twice.
    """

    def register(check: Callable[[], Evidence]) -> Callable[[], Evidence]:
        if id in REGISTRY:
            raise ValueError(f"claim {id} registered twice")
        REGISTRY[id] = Claim(id, title, paper, page, check)
        return check

    return register


def run(claim_: Claim) -> Outcome:
    """Run one claim's check, timing it; an exception becomes an 'error' outcome."""
    start = time.perf_counter()
    try:
        evidence = claim_.check()
        error = ""
    except Exception as exc:  # a broken check must fail loudly, not stop the others
        evidence, error = Evidence(), f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    verdict = "error" if error else evidence.verdict
    return Outcome(claim_, verdict, evidence, seconds, error)
