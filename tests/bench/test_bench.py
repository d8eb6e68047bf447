"""The benchmark harness: experiment configs validate, cells run through Dagster and share work."""

import json
from pathlib import Path

import pytest

from bench.experiments import EXPERIMENTS, QUICK_OVERRIDES, selected
from recdistill_dagster.config import deep_merge, load_config


@pytest.mark.parametrize("quick", [False, True])
def test_every_cell_is_a_valid_configuration(quick: bool) -> None:
    for experiment in EXPERIMENTS:
        base = QUICK_OVERRIDES.get(experiment.profile, {}) if quick else {}
        for cell in experiment.cells:
            load_config(experiment.profile, overrides=deep_merge(base, cell.overrides))


def test_selection_and_quick_subset() -> None:
    assert [e.name for e in selected(None, quick=False)] == [e.name for e in EXPERIMENTS]
    quick = selected(None, quick=True)
    assert "main" in [e.name for e in quick]
    assert [e.name for e in selected(["alpha"], quick=False)] == ["alpha"]
    assert len(selected(["alpha"], quick=True)[0].cells) < len(selected(["alpha"], quick=False)[0].cells)
    with pytest.raises(SystemExit, match="unknown experiment"):
        selected(["nope"], quick=False)


@pytest.mark.integration
def test_cells_share_teacher_and_baseline_and_are_summarized(tmp_path: Path, monkeypatch) -> None:
    from dagster import AssetKey, DagsterInstance

    from bench.aggregate import summarize_cell
    from bench.runner import run_cell

    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    first = run_cell(tmp_path, "default", "tiny", {}, 0, log=lambda _: None)
    assert first.shared_from == {}
    second = run_cell(tmp_path, "alpha_10", "tiny", {"student": {"distill": {"alpha": 10.0}}}, 0, log=lambda _: None)
    assert set(second.shared_from) == {"data", "teacher", "student_baseline"}
    assert (second.home / "checkpoints" / "teacher").is_symlink()
    with DagsterInstance.from_config(str(second.home / "dagster")) as instance:
        assert not instance.fetch_materializations(AssetKey("teacher_checkpoint"), limit=10).records
        assert not instance.fetch_materializations(AssetKey("student_baseline_checkpoint"), limit=10).records
        days = {r.asset_materialization.partition
                for r in instance.fetch_materializations(AssetKey("student_checkpoint"), limit=10).records}
    assert days == {d.isoformat() for d in second.config.calendar.training_days()}
    assert run_cell(tmp_path, "alpha_10", "tiny", {"student": {"distill": {"alpha": 10.0}}}, 0).reused

    summary = summarize_cell([second], n_boot=20)
    assert summary["params"]["student"] < summary["params"]["teacher"]
    assert summary["losses"]["alpha"] == 10.0 and summary["losses"]["task_loss"] > 0
    assert summary["losses"]["distill_kl"] <= summary["losses"]["distill_ce"]
    assert len(summary["per_day"]) == len(second.config.calendar.training_days())
    assert set(summary["calibration"]) == {"all", "feed", "search", "ads"}
    json.dumps(summary)  # everything is JSON-able


def test_pool_runs_each_configuration_once_and_providers_first(tmp_path: Path) -> None:
    from bench.__main__ import CellPool

    pool = CellPool(tmp_path, jobs=2, log=lambda _: None)
    alpha = {"student": {"distill": {"alpha": 10.0}}}
    for seed in (0, 1):
        pool.submit("alpha_10", "tiny", alpha, seed, is_default=False)
        pool.submit("default", "tiny", {}, seed, is_default=True)
    pool.submit("default", "tiny", {}, 0, is_default=False)  # the default recipe in another experiment
    waves = {args[0] + f"/s{args[3]}": wave for args, wave in pool.tasks.values()}
    assert waves == {"default/s0": 0, "default/s1": 1, "alpha_10/s0": 2, "alpha_10/s1": 2}
