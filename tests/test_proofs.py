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
    c03_corollary2_is_theorem1_pruned as c03,
    c04_linearization_pruning_gap as c04,
    c05_appendix_a1_piece_sum as c05,
    c06_theorem2_relu as c06,
    c07_theorem2_general_p as c07,
    c08_inverse_proportionality as c08,
    c09_worked_example as c09,
    c10_sharp_bound as c10,
    c11_water_filling as c11,
    c12_sharp_linearization_vs_pruning as c12,
    c13_lemma1_per_neuron as c13,
    c14_sharp_bound_networks as c14,
    c15_capacity_pieces as c15,
    c16_clamped_optimum as c16,
    c17_theorem1_networks as c17,
    c18_corollary2_networks as c18,
    c19_capacity_comparisons as c19,
)
from proofs import paper
from proofs.framework import REGISTRY, Evidence, StepFailed, fail_fast

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


def wrong_active_label(d1, d2, budget, p=2):
    """A wrong clamped optimum: 'a1 = 1' and 'a2 = 0' swapped in the label."""
    opt = optimum.paper_optimum(d1, d2, budget, p)
    swap = {"a1 = 1 (layer 1 keeps every ReLU)": "a2 = 0 (layer 2 keeps no ReLU)",
            "a2 = 0 (layer 2 keeps no ReLU)": "a1 = 1 (layer 1 keeps every ReLU)"}
    return _replace(opt, active=swap.get(opt.active, opt.active))


def first_layer_first(d1, d2, budget, p=2):
    """A wrong maximiser: keep layer-1 ReLUs first (right only when that is optimal)."""
    opt = optimum.paper_optimum(d1, d2, budget, p)
    x = min(d1, budget)
    return _replace(opt, retained=(x, budget - x), integer_retained=[(x, budget - x)])


#: (check, wrong input) pairs: every claim appears at least once.
WRONG_INPUTS = [
    (c01.check, {"corollary1": wrong_corollary1}),
    (c02.check, {"corollary1_relu": wrong_relu_form}),
    (c03.check, {"corollary2": lambda a1, a2, d1, d2, p=2: bounds.corollary2(a1, a2, d1, d2, p) + a1}),
    (c04.check, {"corollary2": lambda a1, a2, d1, d2, p=2: bounds.corollary2(a1, a2, d1, d2, p) + a1 * a2}),
    (c05.check, {"closed_form": lambda: paper.a1_piece_closed_form() + 1}),
    (c06.check, {"optimum_fn": unclamped_optimum}),
    (c06.check, {"optimum_fn": floor_only_optimum}),
    (c07.check, {"optimum_fn": floor_only_optimum}),
    (c08.check, {"optimum_fn": first_layer_first}),
    (c09.check, {"optimum_fn": floor_only_optimum}),
    (c10.check, {"sharp_pieces": sum_not_product}),
    (c10.check, {"step_premise": lambda p, k, x, k_next: k_next <= k + (p - 1) * x}),
    (c11.check, {"optimum_fn": paper_like_sharp_optimum}),
    (c12.check, {"sharp_pieces": sum_not_product}),
    (c13.check, {"bound": lambda p, k: (p - 1) * k + 1}),
    (c13.check, {"bound": lambda p, k: (p - 2) * (k + 1)}),
    (c14.check, {"sharp_pieces": sum_not_product}),
    (c14.check, {"neuron_bound": lambda p, k: p * (k + 1)}),
    (c15.check, {"needed": lambda n: n - 2}),
    (c16.check, {"optimum_fn": wrong_active_label}),
    (c16.check, {"optimum_fn": floor_only_optimum}),
    (c17.check, {"theorem1": lambda d1, d2, p=2: bounds.theorem1(d1, d2, p) - d2}),
    (c18.check, {"corollary2_counts": lambda x, y, d1, d2, p=2: bounds.corollary2_counts(x, y, d1, d2, p) - y}),
    (c18.check, {"to_capacity": lambda pieces: pieces + 2}),
    (c19.check, {"corollary1_counts": lambda x, y, d1, d2, p=2: bounds.corollary2_counts(x, y, d1, d2, p)}),
]


@pytest.mark.parametrize("check, kwargs", WRONG_INPUTS)
def test_wrong_input_gets_failing_verdict(check, kwargs):
    """Every claim's own checking code rejects a wrong formula, premise or optimum."""
    with fail_fast(), pytest.raises(StepFailed):
        check(**kwargs)


def test_wrong_input_fails_without_fail_fast_too():
    """Outside fail_fast() a wrong input gives a 'fail' verdict with its steps recorded."""
    evidence = c02.check(corollary1_relu=wrong_relu_form)
    assert isinstance(evidence, Evidence) and evidence.verdict == "fail"
    assert [s.ok for s in evidence.steps] == [True, False, True]


def test_every_claim_has_a_failing_test():
    """No claim is left without a wrong-input test above (a claim must be able to fail)."""
    from test_latency_proofs import WRONG_INPUTS as LATENCY_WRONG_INPUTS

    modules = {check.__module__ for check, _ in WRONG_INPUTS + LATENCY_WRONG_INPUTS}
    assert {claim_.check.__module__ for claim_ in REGISTRY.values()} <= modules


@pytest.mark.parametrize("claim_id", ["c08", "c11", "c19"])
def test_no_overstated_wording(claim_id):
    """c08 is about interior optima; c11 no longer says the allocations coincide only when
    d2 = 1 or x = 0 ((1, 2, 2) is a counterexample); c19 gives its verdict."""
    title = REGISTRY[claim_id].title
    page = (PAGES / REGISTRY[claim_id].page).read_text()
    if claim_id == "c08":
        assert "at interior optima" in title and "(2, 1, 3)" in page
    elif claim_id == "c11":
        assert "can only agree" not in str(c11.check().steps) and "(1, 2, 2)" in page
    else:
        assert REGISTRY[claim_id].paper == "not a theorem as stated"


def test_every_page_states_its_scope():
    """Each page says what is proven for all values and what only on a finite range."""
    for claim_ in REGISTRY.values():
        text = (PAGES / claim_.page).read_text()
        text = " ".join(text.split())
        assert "Proven for all values" in text and "Checked only on a finite range" in text, claim_.id


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
    assert len(rows) == len(REGISTRY) >= 19
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
    assert len(REGISTRY) >= 19
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
