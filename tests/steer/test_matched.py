"""The matched-fluency table: interpolation along the prior's curve, paired intervals, no invented matches."""

from __future__ import annotations

import math

import pytest

from steer.matched import MATCHED_COLUMNS, matched_table


def _cell(method, lam, base_ppl, hits, corpus="c"):
    row = {"corpus": corpus, "method": method, "lam": lam, "base_ppl": base_ppl}
    samples = [{"corpus": corpus, "method": method, "lam": lam, "prompt_index": i, "judge_hit": h}
               for i, h in enumerate(hits)]
    return row, samples


def test_prior_is_read_at_the_baselines_perplexity_and_differences_are_paired():
    n = 40
    cells = [_cell("prior", 0.0, 10.0, [0.0] * n), _cell("prior", 0.5, 40.0, [1.0] * n),
             _cell("prompt", 0.0, 20.0, [1.0] * (n // 4) + [0.0] * (3 * n // 4)),
             _cell("lora", 0.0, 80.0, [0.5] * n)]
    # a second corpus, after the first one's interpolation (regression: a name clash broke the next corpus)
    cells += [_cell("prior", 0.0, 10.0, [0.0] * n, "d"), _cell("prior", 0.5, 40.0, [1.0] * n, "d"),
              _cell("prompt", 0.0, 40.0, [0.0] * n, "d")]
    rows = [c[0] for c in cells]
    samples = [s for c in cells for s in c[1]]
    got = matched_table(rows, samples)
    assert [m["baseline"] for m in got] == ["prompt", "lora", "prompt"] and set(got[0]) == set(MATCHED_COLUMNS)
    assert got[2]["prior_hit_at_ppl"] == pytest.approx(1.0) and got[2]["diff"] == pytest.approx(1.0)
    prompt = got[0]
    # log(20) lies half way between log(10) and log(40): the prior's hit rate there is 0.5
    assert prompt["prior_hit_at_ppl"] == pytest.approx(0.5) and prompt["baseline_hit"] == pytest.approx(0.25)
    assert prompt["diff"] == pytest.approx(0.25) and prompt["diff_lo"] <= 0.25 <= prompt["diff_hi"]
    assert (prompt["prior_lam_low"], prompt["prior_lam_high"]) == (0.0, 0.5)
    lora = got[1]  # the prior never gets that far: no matched value is made up
    assert math.isnan(lora["prior_hit_at_ppl"]) and math.isnan(lora["diff"])


def test_a_variant_curve_starts_from_the_unsteered_cell():
    from steer.matched import matched_variants

    n = 20
    cells = [_cell("prior", 0.0, 10.0, [0.0] * n), _cell("lora", 0.0, 20.0, [0.0] * n),
             _cell("contrastive", 1.0, 40.0, [1.0] * n)]
    for row, _ in cells:
        row["knob"] = row["lam"]
    rows = [c[0] for c in cells]
    got = matched_variants(rows, [s for c in cells for s in c[1]])
    assert len(got) == 1 and got[0]["method"] == "contrastive" and got[0]["baseline"] == "lora"
    assert got[0]["method_hit_at_ppl"] == pytest.approx(0.5) and got[0]["knob_low"] == 0.0


def test_methods_are_matched_against_each_other_by_interpolation_and_at_no_worse_fluency():
    from steer.matched import METHOD_COLUMNS, matched_methods

    n = 20
    cells = [_cell("prior", 0.0, 10.0, [0.0] * n),
             _cell("a", 1.0, 20.0, [0.5] * n), _cell("a", 2.0, 40.0, [1.0] * n),
             _cell("b", 1.0, 8.0, [0.25] * n), _cell("b", 2.0, 30.0, [0.0] * n),
             _cell("lora", 0.0, 50.0, [1.0] * n)]
    for row, _ in cells:
        row["knob"] = row["lam"]
    rows = [c[0] for c in cells]
    samples = [s for c in cells for s in c[1]]
    got = {(r["method"], r["other"], r["other_knob"], r["how"]): r for r in matched_methods(rows, samples)}
    assert all(set(r) == set(METHOD_COLUMNS) for r in got.values())
    assert {k[:2] for k in got} == {("a", "b"), ("b", "a")}  # baselines and the unsteered cell are no "other"
    # b's cell at ppl 30 lies on a's curve between 20 and 40 (log-linear): hit 0.5 + 0.5 * log(1.5) / log(2).
    r = got[("a", "b", 2.0, "interpolated")]
    assert (r["method_knob_low"], r["method_knob_high"]) == (1.0, 2.0)
    expected = 0.5 + 0.5 * math.log(1.5) / math.log(2)
    assert r["method_hit"] == pytest.approx(expected) and r["diff"] == pytest.approx(expected)
    # ... and a's own cell closest in fluency but no less fluent is knob 1 (ppl 20): 0.5 - 0.
    r = got[("a", "b", 2.0, "no_worse_fluency")]
    assert r["method_knob_low"] == 1.0 and r["method_base_ppl"] == 20.0 and r["diff"] == pytest.approx(0.5)
    # b's cell at ppl 8 is more fluent than a's whole curve (from the unsteered 10): nothing is made up.
    r = got[("a", "b", 1.0, "interpolated")]
    assert math.isnan(r["diff"]) and r["other_hit"] == pytest.approx(0.25)
    assert ("a", "b", 1.0, "no_worse_fluency") not in got
    # a's cell at ppl 40 lies beyond b's curve (10 -> 8 -> 30): only b's cell at ppl 30 compares.
    assert math.isnan(got[("b", "a", 2.0, "interpolated")]["diff"])
    r = got[("b", "a", 2.0, "no_worse_fluency")]
    assert r["method_knob_low"] == 2.0 and r["diff"] == pytest.approx(-1.0)


def test_constraint_table_and_widest_holding_range():
    from steer.matched import Constraints, constraint_table, widest_holding_range

    def row(method, knob, hit, ppl, d2, deg):
        return {"corpus": "c", "method": method, "lam": knob if method == "prior" else 0.0, "knob": knob,
                "judge_hit": hit, "base_ppl": ppl, "distinct_2": d2, "degenerate_rate": deg}

    rows = [row("prior", 0.0, 0.10, 50.0, 0.80, 0.01), row("prompt", 0.0, 0.5, 50.0, 0.8, 0.0),
            row("v", 1.0, 0.45, 54.0, 0.78, 0.02),   # holds (one point more degenerate is allowed)
            row("v", 2.0, 0.45, 52.0, 0.73, 0.00),   # holds (0.9125x distinct-2)
            row("v", 3.0, 0.50, 50.0, 0.71, 0.00),   # distinct-2 0.8875x
            row("v", 4.0, 0.60, 45.0, 0.75, 0.03),   # two points more degenerate
            row("v", 8.0, 0.35, 40.0, 0.80, 0.00)]   # hit gain 0.25
    table = constraint_table(rows)  # the defaults: +0.30 hit, 1.10x ppl, 0.90x distinct-2, +0.01 degenerate
    assert [r["method"] for r in table] == ["v"] * 5  # the unsteered cell and the baselines are not checked
    assert [r["failed"] for r in table] == ["", "", "distinct2", "degenerate", "hit"]
    assert widest_holding_range(table, "c", "v") == (1.0, 2.0, 2.0)
    loose = constraint_table(rows, Constraints(min_distinct2_ratio=0.85, max_extra_degenerate=0.02))
    assert widest_holding_range(loose, "c", "v") == (1.0, 4.0, 4.0)
    assert widest_holding_range(table, "c", "none") is None


@pytest.mark.parametrize("bad", [{"min_hit_gain": float("nan")}, {"max_ppl_ratio": 0.0},
                                 {"min_distinct2_ratio": -0.1}, {"max_extra_degenerate": "0.01"},
                                 {"min_hit_gain": True}])
def test_constraints_refuse_bad_limits_by_name(bad):
    from steer.matched import Constraints

    with pytest.raises(ValueError, match=next(iter(bad))):
        Constraints(**bad)


def test_holding_cells_are_compared_with_every_baseline_paired_over_prompts():
    from steer.matched import HOLDING_COLUMNS, holding_vs_baselines

    n = 40
    cells = [_cell("prior", 0.0, 20.0, [0.0] * n), _cell("prompt", 0.0, 35.0, [1.0] * 10 + [0.0] * 30),
             _cell("lora", 0.0, 18.0, [1.0] * 30 + [0.0] * 10),
             _cell("v", 1.0, 21.0, [1.0] * 20 + [0.0] * 20),    # holds
             _cell("v", 2.0, 30.0, [1.0] * 40)]                 # 1.5x perplexity: holds nothing
    for row, _ in cells:
        row.update(knob=row["lam"], distinct_2=0.8, degenerate_rate=0.0)
        row["judge_hit"] = sum(s["judge_hit"] for s in _) / n
    rows = [c[0] for c in cells]
    got = holding_vs_baselines(rows, [s for c in cells for s in c[1]])
    assert [(g["knob"], g["baseline"]) for g in got] == [(1.0, "prompt"), (1.0, "lora")]
    assert set(got[0]) == set(HOLDING_COLUMNS)
    vs_prompt, vs_lora = got
    # paired per prompt: prompts 0-9 hit under both, 10-19 only under v, 20-39 under neither
    assert vs_prompt["diff"] == pytest.approx(0.25) and vs_prompt["diff_lo"] > 0 and vs_prompt["no_less_fluent"]
    assert vs_lora["diff"] == pytest.approx(-0.25) and vs_lora["diff_hi"] < 0 and not vs_lora["no_less_fluent"]


def test_at_no_worse_fluency_takes_the_method_cell_closest_in_fluency_never_the_best_hit():
    from steer.matched import FLUENCY_COLUMNS, at_no_worse_fluency

    n = 30
    cells = [_cell("prior", 0.0, 10.0, [0.0] * n), _cell("prompt", 0.0, 25.0, [0.0] * n),
             _cell("cp", 1.0, 9.0, [1.0] * n), _cell("cp", 2.0, 12.0, [0.5] * n), _cell("cp", 4.0, 30.0, [1.0] * n)]
    for row, _ in cells:
        row["knob"] = row["lam"]
    rows = [c[0] for c in cells]
    got = at_no_worse_fluency(rows, [s for c in cells for s in c[1]])
    assert set(got[0]) == set(FLUENCY_COLUMNS)
    cp = [g for g in got if g["method"] == "cp"]
    # base ppl 12 is the largest not above the prompt's 25 (the cell at 30 is less fluent; 9 has a higher hit)
    assert len(cp) == 1 and cp[0]["knob"] == 2.0 and cp[0]["diff"] == pytest.approx(0.5)
    assert cp[0]["diff_lo"] == pytest.approx(0.5) and cp[0]["baseline"] == "prompt"
    assert not [g for g in got if g["method"] == "prior"]  # only its unsteered cell: nothing steered to compare
