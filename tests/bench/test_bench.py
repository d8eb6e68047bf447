"""The benchmark harness: experiment configs validate, cells run through Dagster and share work."""

import json
from pathlib import Path

import polars as pl
import pytest

from bench.experiments import EXPERIMENTS, profile_overrides, selected
from recdistill_dagster.config import deep_merge, load_config


@pytest.mark.parametrize("quick", [False, True])
def test_every_cell_is_a_valid_configuration(quick: bool) -> None:
    for experiment in EXPERIMENTS:
        base = profile_overrides(experiment, quick)
        for cell in experiment.cells:
            load_config(experiment.profile, overrides=deep_merge(base, cell.overrides))


def test_selection_and_quick_subset() -> None:
    assert [e.name for e in selected(None, quick=False)] == [e.name for e in EXPERIMENTS if e.in_default_run]
    assert {"main", "counter_fed", "recipe", "alpha", "debias", "record_epoch"} <= {
        e.name for e in selected(None, quick=False)}
    quick = selected(None, quick=True)
    assert "main" in [e.name for e in quick]
    assert [e.name for e in selected(["alpha"], quick=False)] == ["alpha"]
    assert len(selected(["counter_fed"], quick=True)[0].cells) < len(selected(["counter_fed"], quick=False)[0].cells)
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
    # The teacher's ONNX exports are the provider's files, not exported again per cell.
    assert (second.home / "serving" / "teacher").is_symlink()
    assert any((first.home / "serving" / "teacher").rglob("*.onnx"))
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

    # The headline and a paired cell (default and α = 10 are reused from above).
    summary, runs = _headline_summary(tmp_path, (0,), HEADLINE_CELLS, oracle="oracle")
    assert runs["default"][0].reused and runs["alpha_10"][0].reused
    assert set(runs["oracle"][0].shared_from) == {"data", "teacher", "student_baseline"}  # the teacher's rows
    head = _headline_checks(summary, runs, n_worlds=1)
    ceiling = head["ceiling"]
    assert {"oracle_gain", "oracle_gain_ci", "rho", "eta_star", "bayes_gain"} <= set(ceiling)
    assert ceiling["rho"]["numerator"] == pytest.approx(head["student_gain"])
    assert ceiling["oracle_gain"] == pytest.approx(ceiling["auc_oracle_distilled"] - head["auc"]["student_raw"])
    # One world: the seed-level units are its model seeds, and one seed gives no such interval.
    assert head["eta_ci_seed_level"] is None and "model seeds" in head["seed_level_units"]

    # Matched comparison (kind `matched`): each group at its best cell, paired with the reference group's best.
    from bench.aggregate import matched_comparison
    from bench.experiments import Cell, Experiment

    grouped = Experiment("debias", "t", "p", (Cell("default", {}, group="exact"), Cell("alpha_10", {}, group="exact"),
                                               Cell("oracle", {}, group="oracle")),
                         profile="tiny", kind="matched", reference="default")
    matched = {m["group"]: m for m in matched_comparison(grouped, summary["cells"], runs, n_boot=20)}
    gains = {c["name"]: c["student_gain"] for c in summary["cells"]}
    best = max(("default", "alpha_10"), key=gains.__getitem__)
    assert matched["exact"]["cell"] == best and matched["exact"]["vs_reference_best"] is None
    assert matched["exact"]["at_grid_edge"] and sorted(matched["exact"]["alphas"]) == [3.0, 10.0]
    assert matched["oracle"]["vs_reference_best"]["numerator"] == pytest.approx(gains["oracle"] - gains[best])

    # Teacher sweep: another teacher on the same rows and baseline is paired on the teacher's AUC and the
    # distilled student's; the teacher-sharing pairing has no difference to offer for it.
    from bench.aggregate import compare_cells, compare_teachers

    other = run_cell(tmp_path, "other_teacher", "tiny", {"teacher": {"seed": 5}}, 0)
    assert set(other.shared_from) == {"data", "student_baseline"}
    sweep_runs = {"default": runs["default"], "other_teacher": [other]}
    assert compare_cells("default", sweep_runs, n_boot=20) == {}
    sweep = compare_teachers("default", sweep_runs, n_boot=20)
    other_summary = summarize_cell([other], n_boot=20)
    default_summary = next(c for c in summary["cells"] if c["name"] == "default")
    assert sweep["default"]["teacher_delta"]["value"] == 0.0
    assert sweep["other_teacher"]["teacher_auc"] == pytest.approx(other_summary["auc"]["teacher"])
    assert sweep["other_teacher"]["teacher_auc"] != pytest.approx(default_summary["auc"]["teacher"])
    assert sweep["other_teacher"]["teacher_delta"]["value"] == pytest.approx(
        other_summary["auc"]["teacher"] - default_summary["auc"]["teacher"])
    assert sweep["other_teacher"]["distilled_delta"]["value"] == pytest.approx(
        other_summary["auc"]["student_distill"] - default_summary["auc"]["student_distill"])
    low, high = sweep["other_teacher"]["teacher_delta"]["ci"]
    assert low <= sweep["other_teacher"]["teacher_delta"]["value"] <= high


def _headline_checks(summary: dict, runs: dict, n_worlds: int) -> dict:
    from bench.report import markdown
    from recdistill_dagster import layout

    head = summary["headline"]
    for key in ("eta", "eta_ci", "eta_ci_seed_level", "teacher_gain", "teacher_gain_ci", "student_gain",
                "student_gain_ci", "param_ratio", "world_seeds", "model_seeds", "n_distinct_eval_rows", "ceiling",
                "auc_aggregation"):
        assert key in head
    default = runs["default"]
    assert head["auc_aggregation"] == "mean_daily_auc" and head["model_seeds"] == [0]
    assert head["world_seeds"] == sorted({r.config.data.seed for r in default}) and len(head["world_seeds"]) == n_worlds
    one_world = sum(pl.read_parquet(default[0].home / layout.report_path("ranker", d, "predictions.parquet")).height
                    for d in default[0].config.calendar.training_days())
    assert head["n_distinct_eval_rows"] == n_worlds * one_world
    assert 0 < head["param_ratio"] < 1 and head["params"]["served"] < head["params"]["student"]
    paired = {c["name"]: c["vs_reference"] for c in summary["cells"]}
    assert paired["default"] is None and paired["alpha_10"] is not None
    alpha = next(c for c in summary["cells"] if c["name"] == "alpha_10")
    assert paired["alpha_10"]["numerator"] == pytest.approx(alpha["student_gain"] - head["student_gain"])
    text = markdown({"generated_at": "now", "command": "test", "quick": True, "wall_seconds": 1.0,
                     "machine": {"cpus": 2, "platform": "p", "torch": "t", "dagster": "d"}, "headline": head,
                     "experiments": {"main": summary}})
    assert text.index("teacher gain") < text.index("**η = ")
    if head["ceiling"]:
        assert text.index("teacher gain") < text.index("oracle gain G*") < text.index("**η = ")
    json.dumps(summary)
    return head


HEADLINE_CELLS = (("default", {}), ("alpha_10", {"students": [{"name": "ranker", "distill": {"alpha": 10.0}}]}),
                  ("oracle", {"students": [{"name": "ranker", "distill": {"source": "oracle"}}]}))


def _headline_summary(tmp_path: Path, worlds: tuple[int, ...], cells_of: tuple[tuple[str, dict], ...],
                      oracle: str | None = None) -> tuple[dict, dict]:
    from bench.aggregate import summarize_experiment
    from bench.experiments import Cell, Experiment
    from bench.runner import run_cell, world_overrides

    cells = tuple(Cell(name, overrides) for name, overrides in cells_of)
    experiment = Experiment("main", "t", "p", cells, profile="tiny", reference="default", oracle=oracle)
    runs = {c.name: [run_cell(tmp_path, c.name, "tiny", deep_merge(c.overrides, world_overrides("tiny", w)), 0)
                     for w in worlds] for c in cells}
    return summarize_experiment(experiment, runs, n_boot=20), runs


def test_references_and_oracles_name_cells_of_their_experiment() -> None:
    from bench.experiments import HEADLINE_EXPERIMENT

    for experiment in EXPERIMENTS:
        names = [c.name for c in experiment.cells]
        assert len(set(names)) == len(names), experiment.name
        for cell in (experiment.reference, experiment.oracle):
            assert cell is None or cell in names, (experiment.name, cell)
    assert HEADLINE_EXPERIMENT in {e.name for e in EXPERIMENTS}


def test_an_experiment_kept_from_an_earlier_invocation_says_so() -> None:
    from bench.report import provenance

    results = {"generated_at": "2026-01-02T00:00:00", "command": "python -m bench"}
    assert provenance({"invocation": dict(results)}, results) == ""
    earlier = {"invocation": {"generated_at": "2026-01-01T00:00:00", "command": "python -m bench --only teacher"}}
    assert "`python -m bench --only teacher`, generated 2026-01-01T00:00:00" in provenance(earlier, results)
    assert "earlier invocation" in provenance({}, results)


def test_world_overrides_reseed_the_synthetic_world_only() -> None:
    from bench.runner import n_worlds, world_overrides

    assert world_overrides("tiny", 0) == {}
    seed = load_config("tiny").data.seed
    assert load_config("tiny", overrides=world_overrides("tiny", 2)).data.seed == seed + 2
    assert n_worlds("tiny", 3) == 3 and n_worlds("movielens", 3) == 1
    with pytest.raises(ValueError, match="world 0 only"):
        world_overrides("movielens", 1)


def test_each_experiment_runs_on_its_own_worlds_capped_by_the_command_line() -> None:
    from bench.__main__ import _replicates
    from bench.experiments import BY_NAME, DEFAULT_WORLDS, HEADLINE_WORLDS, QUICK_WORLDS, selected

    def worlds_of(name: str, cap: int | None = None, quick: bool = False) -> list[int]:
        (experiment,) = selected([name], quick)
        return sorted({w for w, _ in _replicates(experiment, cap, seeds=[0, 1])})

    assert HEADLINE_WORLDS > DEFAULT_WORLDS
    assert worlds_of("main") == list(range(HEADLINE_WORLDS))
    # The paired experiments run on the headline's first worlds, so their shared cells are the headline's.
    assert worlds_of("recipe") == list(range(DEFAULT_WORLDS))
    assert worlds_of("main", quick=True) == list(range(QUICK_WORLDS))
    assert worlds_of("main", cap=2) == worlds_of("recipe", cap=2) == [0, 1]
    assert worlds_of("teacher", cap=3) == [0] and BY_NAME["teacher"].worlds == 1
    assert worlds_of("movielens") == [0]  # a fixed dataset has one world
    assert _replicates(BY_NAME["main"], 1, seeds=[0, 1]) == [(0, 0), (0, 1)]


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


def test_results_of_another_protocol_are_not_kept() -> None:
    from bench.__main__ import _comparable
    from bench.experiments import BY_NAME, protocol_of

    main = BY_NAME["main"]
    assert protocol_of(main, quick=True) != protocol_of(main, quick=False)
    kept = {"main": {"cells": [], "protocol": protocol_of(main, quick=False)}}
    assert _comparable(kept, quick=False) == kept
    assert _comparable(kept, quick=True) == {}  # measured at full size: not a QUICK result
    other_world = {"main": {"cells": [], "protocol": {**protocol_of(main, quick=False), "digest": "another"}}}
    assert _comparable(other_world, quick=False) == {}
    assert _comparable({"main": {"cells": []}}, quick=False) == {}  # no protocol recorded: not kept
