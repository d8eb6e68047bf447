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


@pytest.mark.benchmark
def test_cells_share_streams_teacher_and_baseline_and_are_summarized(tmp_path: Path, monkeypatch) -> None:
    from dagster import AssetKey, DagsterInstance

    from bench.aggregate import summarize_cell
    from bench.pool import CellPool
    from bench.runner import run_cell

    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    alpha = {"students": [{"name": "ranker", "distill": {"alpha": 10.0}}]}
    pool = CellPool(tmp_path, jobs=1, log=lambda _: None)
    pool.submit("alpha_10", "tiny", alpha, 0, is_default=False)
    pool.submit("default", "tiny", {}, 0, is_default=True)
    pool.start()
    second = pool.result("tiny", alpha, 0)  # runs the streams, then the default cell, then this one
    first = pool.result("tiny", {}, 0)
    assert set(first.shared_from) == {"data"} and "streams" in first.shared_from["data"]
    assert set(second.shared_from) == {"data", "teacher", "student_baseline"}
    assert second.shared_from["teacher"] == str(first.home)
    assert (second.home / "checkpoints" / "teacher").is_symlink()
    assert second.config.student("ranker").distill.alpha != first.config.student("ranker").distill.alpha
    assert [s.name for s in second.config.active_students] == ["ranker"]  # the measured student only
    with DagsterInstance.from_config(str(second.home / "dagster")) as instance:
        assert not instance.fetch_materializations(AssetKey("teacher_checkpoint"), limit=10).records
        assert not instance.fetch_materializations(AssetKey(["ranker", "baseline_checkpoint"]), limit=10).records
        days = {r.asset_materialization.partition
                for r in instance.fetch_materializations(AssetKey(["ranker", "student_checkpoint"]), limit=10).records}
    assert days == {d.isoformat() for d in second.config.calendar.training_days()}
    assert run_cell(tmp_path, "alpha_10", "tiny", alpha, 0).reused

    summary = summarize_cell([second], n_boot=20)
    assert summary["params"]["student"] < summary["params"]["teacher"]
    assert summary["losses"]["alpha"] == 10.0 and summary["losses"]["task_loss"] > 0
    assert summary["losses"]["distill_kl"] <= summary["losses"]["distill_ce"]
    assert len(summary["per_day"]) == len(second.config.calendar.training_days())
    assert set(summary["calibration"]) == {"all", "feed", "search", "ads"}
    json.dumps(summary)  # everything is JSON-able


def test_pool_runs_each_configuration_once_after_what_it_links(tmp_path: Path) -> None:
    from bench.pool import DEFAULT_CELL, OWN_TEACHER_CELL, STREAMS, CellPool

    pool = CellPool(tmp_path, jobs=1, log=lambda _: None)
    alpha = {"students": [{"name": "ranker", "distill": {"alpha": 10.0}}]}
    small_teacher = {"teacher": {"arch": {"embed_dim": 6}}}
    for seed in (0, 1):
        pool.submit("alpha_10", "tiny", alpha, seed, is_default=False)
        pool.submit("small_teacher", "tiny", small_teacher, seed, is_default=False)
        pool.submit("default", "tiny", {}, seed, is_default=True)
    pool.submit("default", "tiny", {}, 0, is_default=False)  # the default recipe in another experiment
    pool.start()
    names = {task_id: (task.args[0] + f"/s{task.args[3]}" if task.kind != STREAMS else "streams")
             for task_id, task in pool.tasks.items()}
    deps = {names[task_id]: {names[d] for d in task.deps} for task_id, task in pool.tasks.items()}
    # One streams task (the seeds share the world), every seed's default waits only for it, and the
    # other cells wait for the default of their seed (teacher and baseline) or only its baseline.
    assert deps == {
        "streams": set(),
        "default/s0": {"streams"}, "default/s1": {"streams"},
        "alpha_10/s0": {"streams", "default/s0"}, "alpha_10/s1": {"streams", "default/s1"},
        "small_teacher/s0": {"streams", "default/s0"}, "small_teacher/s1": {"streams", "default/s1"},
    }
    kinds = {names[task_id]: task.kind for task_id, task in pool.tasks.items()}
    assert kinds["default/s0"] == DEFAULT_CELL and kinds["small_teacher/s1"] == OWN_TEACHER_CELL
    assert len(pool.tasks) == 7
