"""The performance benchmark's harness at tiny sizes: the cases run in this process, the JSON has every key
the issue asks for and the numbers are sane. No timing assertions.

To keep the suite fast, the two cases that only repeat what the orchestration case already runs (set up a
one-day pipeline and materialize a streaming day: `scaling` at three sizes, `make_run`) return recorded
shapes here; their aggregation, and everything else, is the harness's own code.
"""

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from bench.perf.plan import PerfPlan, full_plan, quick_plan

TINY = {
    "pipeline_profile": "tiny", "recording_rows": 64, "recording_repeats": 1, "train_rows": 64, "train_repeats": 1,
    "join_rows": [400, 800], "join_repeats": 1, "orchestration_impressions": [300], "orchestration_repeats": 1,
    "scaling_impressions": [150, 300, 1500], "run_profile": "tiny", "serving_calls": 1, "serving_repeats": 1,
    "serving_onnx": False, "fixes_rows": 600, "fixes_repeats": 1,
}


def _recorded(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """What `scaling` and `make_run` return (their shapes), for the aggregation."""
    if name == "scaling":
        size = params["impressions"]
        return {"seconds": 1.0 + size / 1000, "work_peak_rss_mb": 500.0 + size / 100, "baseline_rss_mb": 400.0,
                "peak_rss_mb": 900.0 + size / 100, "rows": {"eval": size}, "command": "recorded",
                "stage_peaks_mb": {"teacher training": 100.0 + size / 10, "report: ranker": 50.0}}
    days = [{"label": f"report: {s}", "seconds": 0.5 + i / 10, "detail": f"2026-01-0{i + 2}"}
            for s in ("ranker", "prerank") for i in range(3)]
    return {"seconds": 20.0, "peak_rss_mb": 900.0, "stages": {"teacher training": 5.0, "report: ranker": 3.0},
            "report_calls": days, "command": "recorded"}
KEYS = ("recording_overhead", "join", "train_efficiency", "orchestration_overhead", "scaling_exponent_time",
        "scaling_exponent_memory", "serving_speedup", "make_run", "orchestration", "targets", "machine_before")


def test_presets_are_valid_and_quick_is_smaller() -> None:
    quick, full = quick_plan(), full_plan()
    assert full.join_rows == (1_000_000, 10_000_000, 30_000_000)
    assert max(quick.join_rows) < max(full.join_rows)
    for plan in (quick, full):
        low, _, high = plan.scaling_impressions
        assert high >= 9.5 * low  # three sizes spanning about 10×
    with pytest.raises(ValueError):
        PerfPlan.model_validate({**quick.model_dump(), "unknown_knob": 1})


@pytest.mark.benchmark
def test_harness_writes_every_key_with_sane_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from bench.perf.__main__ import Runner, main

    # The cases point the pipeline's environment at their own state folders: restore it afterwards.
    for variable in ("RECDISTILL_HOME", "RECDISTILL_PROFILE", "DAGSTER_HOME", "MPLCONFIGDIR",
                     "RECDISTILL_STORE_URL", "RECDISTILL_MLFLOW_URI"):
        if variable in os.environ:
            monkeypatch.setenv(variable, os.environ[variable])
        else:
            monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    real_case = Runner.case

    def case(self: Runner, name: str, params: dict[str, Any], tag: str = "", profile: bool = False) -> dict[str, Any]:
        if name in ("scaling", "make_run"):
            return _recorded(name, params)
        return real_case(self, name, params, tag, profile)

    monkeypatch.setattr(Runner, "case", case)
    threads = torch.get_num_threads()
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(TINY))
    out = tmp_path / "results"
    try:
        assert main(["--quick", "--inline", "--plan", str(plan), "--out", str(out), "--state",
                     str(tmp_path / "state")]) == 0
    finally:
        torch.set_num_threads(threads)
    results = json.loads((out / "performance.json").read_text())
    for key in KEYS:
        assert key in results, key
    assert math.isfinite(results["recording_overhead"]) and results["recording_overhead"] < 1
    assert [j["rows"] for j in results["join"]] == TINY["join_rows"]
    for entry in results["join"]:
        for field in ("rows", "seconds", "peak_rss_mb", "pandas_seconds", "pandas_peak_rss_mb"):
            assert entry[field] is not None and entry[field] > 0, (field, entry)
    assert set(results["train_efficiency"]) == {"teacher", "ranker", "prerank"}
    assert all(value > 0 for value in results["train_efficiency"].values())
    assert math.isfinite(results["orchestration_overhead"]) and results["orchestration_overhead"] > -1
    assert math.isfinite(results["scaling_exponent_time"]) and math.isfinite(results["scaling_exponent_memory"])
    speedup = results["serving_speedup"]
    assert speedup["batch_1"] > 0 and speedup["batch_512"] > 0 and speedup["parameter_ratio"] > 1
    breakdown = results["orchestration"]["scales"][0]["breakdown_dagster"]
    for stage in ("data generation", "teacher training", "health check", "MLflow logging",
                  "Dagster bookkeeping (rest)", "report: ranker", "student training: ranker distilled"):
        assert stage in breakdown["seconds"], stage
    assert sum(breakdown["shares"].values()) == pytest.approx(1.0)
    assert results["make_run"]["report_cost_by_day"]["report: ranker"]["seconds_by_day"] == [0.5, 0.6, 0.7]
    assert results["scaling_exponent_time"] > 0
    exponents = results["scaling"]["stage_memory_exponents"]
    assert exponents["teacher training"] > 0 and exponents["report: ranker"] == pytest.approx(0.0)
    assert results["serving"]["operators"]["teacher"]["1"]["operator_calls_per_forward"] > 0
    names = [row["name"] for row in results["targets"]]
    assert "logit recording overhead" in names and any(n.startswith("orchestration overhead") for n in names)
    markdown = (out / "performance.md").read_text()
    assert "## Targets" in markdown and "load average" in markdown
    assert "*Memory profile:*" in markdown and "operator calls / forward" in markdown


def test_lanes_take_the_longest_cases_first_and_keep_the_case_order() -> None:
    from bench.perf.__main__ import CASE_ORDER, assign_lanes

    weights = {"orchestration": 1300.0, "make_run": 500.0, "scaling": 450.0, "join": 430.0, "serving": 50.0}
    lanes = assign_lanes(["serving", "join", "orchestration", "scaling", "make_run"], 2, weights)
    assert lanes == [["serving", "orchestration"], ["join", "scaling", "make_run"]]
    # A case never measured weighs as much as the heaviest; one lane keeps every case in CASE_ORDER.
    assert sorted(assign_lanes(["train", "orchestration"], 2, weights)) == [["orchestration"], ["train"]]
    assert assign_lanes(list(CASE_ORDER), 1, {}) == [list(CASE_ORDER)]
    assert assign_lanes(["serving"], 2, weights) == [["serving"]]


def test_timeline_books_each_stages_own_peak_memory() -> None:
    import numpy as np

    from bench.perf.timeline import Timeline

    timeline = Timeline(memory=True)
    with timeline.span("day"):
        with timeline.span("large"):
            block = np.ones(12_000_000)  # ≈ 92 MB resident
            del block
        with timeline.span("small"):  # after the larger stage: its own peak, not the day's
            block = np.ones(1_000_000)  # ≈ 8 MB
            del block
    assert timeline.peaks_mb["large"] > 80 and timeline.peaks_mb["small"] < 40
    assert timeline.peaks_mb["day"] >= timeline.peaks_mb["large"] and timeline.peak_mb > 80


def test_timeline_books_a_report_under_its_student_whatever_its_arguments() -> None:
    from types import SimpleNamespace

    import recdistill_dagster.stages.evaluation as evaluation
    from bench.perf.timeline import Timeline, installed

    timeline = Timeline()
    with installed(timeline), pytest.raises(AttributeError):  # a stand-in context: the stage fails at once
        evaluation.evaluate_partition(None, SimpleNamespace(name="ranker"), None, lambda snapshot: None)
    assert list(timeline.totals) == ["report: ranker"]
