"""report.html / report.md / results from saved runs: leaderboard, CIs, cost plots with the Pareto front."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from codepeft.report import build_reports
from codepeft.report.markdown import render_markdown
from codepeft.study.config import load_study
from codepeft.study.runner import StudyRunner


def build_fake_study(directory: Path, model: Path, seeds: str = "[0, 1]", lora_misses: dict | None = None) -> Path:
    """A finished two-seed study written by the real runner with fake engines (see test_study_runner)."""
    from codepeft.study import engines
    from test_study_runner import FakeEngines, write_dataset, write_study

    data = write_dataset(directory)
    study_file = write_study(directory, model, data, f"seeds: {seeds}\nreport_examples: 2\n")
    fake = FakeEngines()
    fake.fail[("generate", "icl")] = RuntimeError("decoder exploded")
    fake.lora_misses = lora_misses or {}
    out = directory / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engines, "train_arm", fake.train)
        patch.setattr(engines, "generate_arm", fake.generate)
        StudyRunner(load_study(study_file), out).run()
    return out


@pytest.fixture(scope="module")
def fake_study(tmp_path_factory, tiny_causal_dir) -> Path:
    return build_fake_study(tmp_path_factory.mktemp("report"), tiny_causal_dir)


@pytest.fixture(scope="module")
def reports(fake_study):
    return build_reports(fake_study)


def test_markdown_leaderboard(reports):
    text = reports.markdown.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| # | arm | method | em@1 [95% CI]")
    rows = table[1:]
    assert [row.split(" | ")[1] for row in rows] == ["lora", "zero-shot", "icl"]  # best first, failed last
    lora = rows[0]
    assert "100.0" in lora and "4,096 (4.10%)" in lora and "2/2" in lora
    assert "baseline" in rows[1]
    assert "0/2, 2 failed" in rows[2]
    assert "## Failed runs" in text and "decoder exploded" in text


def test_seed_interval_and_paired_test_in_results(reports):
    summary = json.loads(reports.json.read_text())["summary"]
    zero = next(s for s in summary if s["arm"] == "zero-shot")["metrics"]["em@1"]
    assert zero["seeds"] == 2 and zero["seed_ci"] == [50.0, 50.0]  # same score for both seeds
    assert zero["bootstrap_ci"][0] <= 50.0 <= zero["bootstrap_ci"][1]
    lora = next(s for s in summary if s["arm"] == "lora")["metrics"]["em@1"]
    assert lora["vs_zero_shot"]["difference"] == 50.0 and lora["vs_zero_shot"]["wins"] == 2
    assert 0 < lora["vs_zero_shot"]["p_value"] <= 1


def test_how_far_the_seed_alone_moves_an_arm_is_measured_and_stated(tmp_path, tiny_causal_dir):
    """LoRA's seed 1 misses 2 of the 4 test problems its seed 0 solves: the report measures that spread
    per problem and says that single-seed differences below it may be the seed's."""
    reports = build_reports(build_fake_study(tmp_path, tiny_causal_dir, lora_misses={1: 2}))
    summary = json.loads(reports.json.read_text())["summary"]
    lora = next(s for s in summary if s["arm"] == "lora")["metrics"]["em@1"]
    spread = lora["seed_spread"]
    assert spread["seeds"] == [0, 1] and spread["difference"] == 50.0 and spread["wins"] == 2
    assert spread["losses"] == 0 and 0 < spread["p_value"] <= 1
    zero = next(s for s in summary if s["arm"] == "zero-shot")["metrics"]["em@1"]
    assert zero["seed_spread"]["difference"] == 0.0  # the same answers on both seeds
    text = reports.markdown.read_text()
    assert "The seed alone moved lora by +50.0 [" in text and "(seed 0 over seed 1, p=" in text
    assert "a difference under 50.0 points involving a train arm may be the seed's" in text


def test_html_is_self_contained_with_table_plots_and_examples(reports):
    page = reports.html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r'(src|href)="https?://', page)  # nothing loaded from the network
    assert page.count('<table class="leaderboard">') == 1
    assert page.count('<svg class="plot"') >= 3  # cost plots, bars, training curves
    assert "Pareto front" in page and "trainable parameters" in page and "peak memory" in page
    assert "Training curves" in page
    assert "Example generations" in page and page.count("<details><summary>t16<") == 1
    assert "<summary>t17<" in page and "<summary>t18<" not in page  # report_examples: 2
    assert "Provenance" in page and "git commit" in page
    assert "decoder exploded" in page


def test_rebuild_from_saved_results_gives_same_tables(fake_study, reports):
    before = reports.markdown.read_text()
    again = build_reports(fake_study)
    assert again.markdown.read_text() == before
    assert render_markdown(again.data) == before


def test_report_of_a_study_with_nothing_finished(tmp_path, tiny_causal_dir):
    from test_study_runner import write_dataset, write_study

    study_file = write_study(tmp_path, tiny_causal_dir, write_dataset(tmp_path))
    runner = StudyRunner(load_study(study_file), tmp_path / "out")
    runner.write_index()  # planned, never run
    result = build_reports(tmp_path / "out")
    assert "<svg" not in result.html.read_text()
    assert result.markdown.read_text().count("| 0/1 |") == 3


def test_findings_say_who_is_best_by_how_much_and_what_is_not_resolved(reports):
    text = reports.markdown.read_text()
    assert text.index("## Findings") < text.index("| # | arm")
    findings = text.split("## Findings", 1)[1].split("runs (", 1)[0]
    assert "**lora** is best on em@1 (100.0 vs zero-shot 50.0; per problem +50.0" in findings
    assert "Holm" in findings and "not resolved" in findings  # 4 problems cannot resolve a 50-point gain
    assert "cannot resolve differences smaller than 5 points" in findings
    assert "Not converged" in findings and "lora" in findings.split("Not converged", 1)[1]
    html = reports.html.read_text()
    assert html.index('class="findings"') < html.index('class="leaderboard"')
    assert "<b>lora</b> is best on em@1" in html


def test_comparisons_are_holm_adjusted_with_runner_up_and_resolution(reports):
    summary = json.loads(reports.json.read_text())["summary"]
    lora = next(s for s in summary if s["arm"] == "lora")["metrics"]["em@1"]
    versus = lora["vs_zero_shot"]
    assert versus["p_holm"] >= versus["p_value"] and versus["comparisons"] == 1  # runner-up is zero-shot: same test
    assert lora["vs_runner_up"]["arm"] == "zero-shot" and lora["vs_runner_up"]["p_holm"] == versus["p_holm"]
    low, high = versus["difference_ci"]
    assert low <= versus["difference"] <= high
    resolution = lora["resolution"]
    assert resolution["n"] == 4 and resolution["resolves_5_points"] is False and resolution["mde"] > 5
    assert next(s for s in summary if s["arm"] == "lora")["converged"] is False
