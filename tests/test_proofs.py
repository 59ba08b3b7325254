"""Tests for proofs: the checks fail on wrong formulas and optima; the full run passes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from capacity import bounds, optimum
from proofs.__main__ import main
from proofs.claims import (
    c01_corollary1_reduces_to_theorem1 as c01,
    c02_relu_forms as c02,
    c06_theorem2_relu as c06,
    c10_sharp_bound as c10,
    c11_water_filling as c11,
)
from proofs.framework import REGISTRY, Evidence

PAGES = Path(__file__).resolve().parents[1] / "proofs" / "pages"


def _replace(result, **changes):
    """A copy of an optimum record (named tuple or dataclass) with fields changed."""
    if dataclasses.is_dataclass(result):
        return dataclasses.replace(result, **changes)
    return result._replace(**changes)


def wrong_corollary1(a1, a2, d1, d2, p=2):
    """Corollary 1 with the factor (p - 1) dropped from a2 d2 (right at p = 2 only)."""
    return bounds.corollary1(a1, a2, d1, d2, p) - (p - 2) * a2 * d2


def wrong_relu_form(a1, a2, d1, d2):
    """The ReLU form of Corollary 1 with a1 a2 doubled."""
    return 2 * a1 * (1 + a2) * d1 * d2 + a2 * d2 + 2


def unclamped_optimum(d1, d2, budget, p=2):
    """A wrong maximiser: the paper's closed form used even outside the box."""
    opt = optimum.paper_optimum(d1, d2, budget, p)
    a1, a2 = optimum.closed_form(d1, d2, budget, p)
    return _replace(opt, retained=(a1 * d1, a2 * d2), interior=True)


def floor_only_optimum(d1, d2, budget, p=2):
    """A wrong integer optimum: forgets ties, keeps only the first."""
    opt = optimum.paper_optimum(d1, d2, budget, p)
    return _replace(opt, integer_retained=opt.integer_retained[:1])


def paper_like_sharp_optimum(widths, budget, p=2):
    """A wrong sharp optimum: fill the first layer first."""
    opt = optimum.sharp_optimum(widths, budget, p)
    first = min(widths[0], budget)
    alloc = (first, *optimum.sharp_optimum(widths[1:], budget - first, p).integer_retained[0]) \
        if len(widths) > 1 and budget - first <= sum(widths[1:]) else opt.integer_retained[0]
    return _replace(opt, integer_retained=[alloc], integer_ties=1)


def sum_not_product(retained, p=2):
    """A wrong piece bound: breakpoints added per layer instead of multiplied."""
    return sum((p - 1) * x for x in retained) + 1


@pytest.mark.parametrize(
    "check, kwargs",
    [
        (c01.check, {"corollary1": wrong_corollary1}),
        (c02.check, {"corollary1_relu": wrong_relu_form}),
        (c06.check, {"optimum_fn": unclamped_optimum}),
        (c06.check, {"optimum_fn": floor_only_optimum}),
        (c11.check, {"optimum_fn": paper_like_sharp_optimum}),
        (c10.check, {"sharp_pieces": sum_not_product}),
    ],
)
def test_wrong_input_gets_failing_verdict(check, kwargs):
    """The same checking code rejects a wrong formula or a wrong optimum."""
    evidence = check(**kwargs)
    assert isinstance(evidence, Evidence)
    assert evidence.verdict == "fail"


def test_right_input_passes_the_same_checks():
    """The checks used above pass with the package's own functions."""
    assert c01.check().verdict == "pass"
    assert c06.check().verdict == "pass"


def test_full_run_passes_and_writes_report(tmp_path, capsys):
    """python -m proofs: every claim passes, REPORT.md is written with a row per claim, and
    the README's claims section is the generated one."""
    report, section_path = tmp_path / "REPORT.md", tmp_path / "section.md"
    assert main(["--readme-section", "--report", str(report), "--section-path", str(section_path)]) == 0
    section = capsys.readouterr().out
    assert section == section_path.read_text()
    rows = [line for line in section.splitlines() if line.startswith("| [c")]
    assert len(rows) == len(REGISTRY) >= 12
    assert all("| **pass** |" in row for row in rows)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert section.strip() in readme, "README's claims section is stale: python -m proofs --readme-section"
    text = report.read_text()
    for claim_id in REGISTRY:
        assert f"[{claim_id}](pages/" in text


def test_json_output(capsys):
    """--json prints one object with the verdict of each claim run."""
    assert main(["--json", "--only", "c02", "--only", "c03", "--no-write"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and [c["id"] for c in out["claims"]] == ["c02", "c03"]
    assert all(c["verdict"] == "pass" for c in out["claims"])


def test_every_claim_has_a_page():
    """Each registered claim links to an existing markdown page."""
    assert len(REGISTRY) >= 12
    for claim_ in REGISTRY.values():
        page = PAGES / claim_.page
        assert page.is_file(), page
        assert page.read_text().startswith(f"# {claim_.id}")


def test_readme_section_and_errors(tmp_path, capsys):
    """--readme-section writes the block; an unknown claim id exits with status 2."""
    section = tmp_path / "section.md"
    assert main(["--readme-section", "--only", "c02", "--section-path", str(section)]) == 0
    assert "proofs/pages/c02_relu_forms.md" in section.read_text()
    capsys.readouterr()
    assert main(["--only", "c99", "--no-write"]) == 2
    assert "unknown claim" in capsys.readouterr().err
