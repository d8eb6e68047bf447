"""Numbers of a benchmark cell over its seeds, read from what the pipeline wrote.

- η and the gains: the report partitions' stored predictions (models after day d scored on day
  d+1, unsampled), AUC within each report day, averaged over days; runs that scored the same
  evaluation rows (one world, several model seeds) form one `World` of the hierarchical bootstrap
  (`bootstrap_aucs`), with the seed-level interval beside it; pooled AUC as a secondary column.
- Paired differences between cells that share teacher, baseline and rows (Δη), and the transfer
  ceiling G* with ρ from the oracle-teacher cell (`summarize_experiment`); cells that share the
  baseline and rows but train their own teachers (a teacher sweep) are paired on both the teacher's
  and the distilled student's AUC (`compare_teachers`).
- Loss magnitudes: the `task_loss` / `distill_loss` metadata of the `student_checkpoint`
  materializations in the cell's Dagster event log; the KL part of the distillation loss is the
  logged cross-entropy minus the entropy of the teacher targets (computed from the student dataset).
- Parameters: the report JSON.
"""

import functools
import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from bench.experiments import HEADLINE_EXPERIMENT, Experiment
from bench.runner import STUDENT, CellRun, digest
from models.debias import distill_logits
from models.metrics import (
    AucBootstrap,
    RatioEstimate,
    World,
    auc,
    bootstrap_aucs,
    logloss,
    ratio_estimate,
    t_interval,
)
from recdistill_dagster import layout
from recdistill_dagster.config import PipelineConfig, SyntheticWorldConfig
from recdistill_dagster.data.schema import SAMPLING_COLUMNS, TEACHER_SAMPLING_COLUMNS
from recdistill_dagster.graph import StudentKeys

MODELS = ("teacher", "student_raw", "student_distill", "student_aux")


@functools.cache
def _predictions_of(home: Path, days: tuple[date, ...]) -> pl.DataFrame:
    frames = []
    for day in days:
        frame = pl.read_parquet(home / layout.report_path(STUDENT, day, "predictions.parquet"))
        frames.append(frame.with_columns(report_day=pl.lit(day.isoformat())))
    return pl.concat(frames)


def _predictions(run: CellRun) -> pl.DataFrame:
    """Every report day's stored predictions of a run (read once per run: cells are paired repeatedly)."""
    return _predictions_of(run.home, tuple(run.config.calendar.training_days()))


def _report(run: CellRun) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(
        (run.home / layout.report_path(STUDENT, run.config.calendar.last_training_day)).read_text())
    return report


def _finite(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all())


def calibration(frame: pl.DataFrame, sources: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Mean predicted rate vs observed rate vs mean p_true, overall and per traffic source."""
    def block(part: pl.DataFrame) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": part.height, "observed": float(part["label"].to_numpy().mean())}
        if part["p_true"].null_count() == 0:
            out["p_true"] = float(part["p_true"].to_numpy().mean())
        for name in MODELS:
            values = part[name].to_numpy()
            if _finite(values):
                out[name] = float(values.mean())
        return out

    result: dict[str, Any] = {"all": block(frame)}
    for source in sorted(frame["traffic_source"].unique().to_list()):
        label = sources[source] if sources and source < len(sources) else str(source)
        result[label] = block(frame.filter(pl.col("traffic_source") == source))
    return result


def _loss_magnitudes(run: CellRun) -> dict[str, Any] | None:
    """Per training partition: task loss, distillation CE, its KL part, and their ratios (means)."""
    from dagster import AssetKey, DagsterInstance

    distill = run.config.student(STUDENT).distill
    rows = []
    with DagsterInstance.from_config(str(run.home / "dagster")) as instance:
        records = instance.fetch_materializations(AssetKey.from_user_string(StudentKeys(STUDENT).distilled),
                                                  limit=1000).records
    latest: dict[str, Any] = {}
    for record in sorted(records, key=lambda r: r.storage_id):
        mat = record.asset_materialization
        if mat is not None and mat.partition is not None:
            latest[mat.partition] = mat.metadata
    for partition, metadata in sorted(latest.items()):
        task, ce = metadata.get("task_loss"), metadata.get("distill_loss")
        if task is None or ce is None or task.value is None or ce.value is None:
            continue
        entropy = _target_entropy(run, partition)
        kl = ce.value - entropy * distill.temperature**2 if entropy is not None else None
        rows.append({"partition": partition, "task": task.value, "distill_ce": ce.value, "distill_kl": kl})
    if not rows:
        return None
    task = float(np.mean([r["task"] for r in rows]))
    ce = float(np.mean([r["distill_ce"] for r in rows]))
    kls = [r["distill_kl"] for r in rows if r["distill_kl"] is not None]
    kl = float(np.mean(kls)) if kls else None
    alpha = distill.alpha
    return {"task_loss": task, "distill_ce": ce, "distill_kl": kl, "alpha": alpha,
            "ce_over_task": ce / task, "alpha_ce_over_task": alpha * ce / task,
            "kl_over_task": kl / task if kl is not None else None,
            "alpha_kl_over_task": alpha * kl / task if kl is not None else None, "per_partition": rows}


def _target_entropy(run: CellRun, partition: str) -> float | None:
    """Mean binary entropy of the distillation targets p_T over the partition's matched rows."""
    folder = (run.home / layout.student_dataset_manifest_path(STUDENT, date.fromisoformat(partition))).parent
    if not folder.exists():
        return None
    frame = pl.concat([pl.read_parquet(f) for f in sorted(folder.glob("*.parquet"))]).filter(
        pl.col("teacher_logit").is_not_null()
    )
    if frame.height == 0:
        return None
    distill = run.config.student(STUDENT).distill
    logit = torch.tensor(frame["teacher_logit"].to_numpy(), dtype=torch.float64)
    student_sampling = torch.tensor(frame.select(SAMPLING_COLUMNS).to_numpy(), dtype=torch.float64)
    teacher_sampling = torch.tensor(frame.select(TEACHER_SAMPLING_COLUMNS).to_numpy(), dtype=torch.float64)
    _, target = distill_logits(distill.teacher_target, torch.zeros_like(logit), logit, student_sampling,
                               teacher_sampling, distill.temperature)
    p = torch.sigmoid(target).clamp(1e-12, 1 - 1e-12)
    return float((-(p * p.log() + (1 - p) * (1 - p).log())).mean())


def world_key(config: PipelineConfig) -> str:
    """What fixes a run's evaluation rows: the data source and the calendar (not sampling, not models);
    readable: `synthetic seed 7 · <digest>`."""
    dumped = config.model_dump(mode="json")
    name = (f"{config.data.kind} seed {config.data.seed}" if isinstance(config.data, SyntheticWorldConfig)
            else config.data.kind)
    return f"{name} · {digest({k: dumped[k] for k in ('data', 'calendar')})}"


def _worlds_of(runs: list[CellRun], predictions: list[pl.DataFrame], models: tuple[str, ...]) -> list[World]:
    """Group runs by the rows they scored: one World per evaluation set, its seeds the runs on it."""
    grouped: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        grouped.setdefault(world_key(run.config), []).append(i)
    worlds = []
    for key, members in grouped.items():
        first = predictions[members[0]]
        for i in members[1:]:
            if not predictions[i]["sample_id"].equals(first["sample_id"]):
                raise ValueError(f"runs of world {key} scored different rows")
        worlds.append(World(key, first["label"].to_numpy().astype(np.float64), first["report_day"].to_numpy(),
                            [{m: predictions[i][m].to_numpy() for m in models} for i in members]))
    return worlds


def summarize_cell(runs: list[CellRun], *, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """One table row: η with its hierarchical and seed-level intervals, AUCs, gains, parameters, losses."""
    config = runs[0].config
    predictions = [_predictions(run) for run in runs]
    aux_ok = all(_finite(p["student_aux"].to_numpy()) for p in predictions)
    models = tuple(m for m in MODELS if m != "student_aux" or aux_ok)
    if all(p["p_true"].null_count() == 0 for p in predictions):
        predictions = [p.with_columns(bayes=pl.col("p_true")) for p in predictions]
        models = (*models, "bayes")
    worlds = _worlds_of(runs, predictions, models)
    boot = bootstrap_aucs(worlds, models, n_boot=n_boot, seed=seed)
    main = ratio_estimate(boot, ("student_distill", "student_raw"), ("teacher", "student_raw"))
    aux = ratio_estimate(boot, ("student_aux", "student_raw"), ("teacher", "student_raw")) if aux_ok else None
    pooled = bootstrap_aucs(worlds, models, n_boot=0, seed=seed, aggregation="pooled_auc")
    params = _report(runs[0])["parameters"]
    sources = getattr(config.data, "traffic_sources", None)
    losses = [x for run in runs if (x := _loss_magnitudes(run)) is not None]
    return {
        "seeds": [run.seed for run in runs],
        "auc_aggregation": boot.aggregation,
        "world_seeds": boot.world_keys,
        "n_eval_rows": sum(p.height for p in predictions),
        "n_distinct_eval_rows": boot.n_distinct_rows,
        "report_days": [d.isoformat() for d in config.calendar.training_days()],
        "eta": main.ratio, "eta_ci": _list(main.ratio_ci), "eta_ci_seed_level": _list(main.ratio_ci_seed_level),
        "seed_level_units": main.seed_level_units,
        "eta_note": main.reason,
        "teacher_gain": main.denominator.point, "teacher_gain_ci": list(main.denominator.ci),
        "teacher_gain_ci_seed_level": _list(main.denominator_ci_seed_level),
        "student_gain": main.numerator.point, "student_gain_ci": list(main.numerator.ci),
        "student_gain_ci_seed_level": _list(main.numerator_ci_seed_level),
        "teacher_gain_significant": main.significant,
        "eta_aux_tower": aux.ratio if aux else None,
        "eta_aux_tower_ci": _list(aux.ratio_ci) if aux else None,
        "auc": dict(boot.point),
        "auc_pooled": dict(pooled.point),
        "logloss": {m: float(np.mean([logloss(p[m].to_numpy(), p["label"].to_numpy()) for p in predictions]))
                    for m in models if m != "bayes"},
        "per_seed": _per_run(runs, boot),
        "per_day": _per_day(predictions),
        "params": {"teacher": params["teacher"], "student": params["student"], "served": params["served"],
                   "ratio": params["served_to_teacher"]},
        "calibration": calibration(pl.concat(predictions), sources),
        "losses": _mean_losses(losses),
        "wall_seconds": sum(run.seconds for run in runs),
        "shared_from": {str(run.seed): {k: Path(v).name for k, v in run.shared_from.items()} for run in runs},
        "overrides": runs[0].overrides if len(runs) == 1 else _without_seed(runs[0].overrides),
    }


def _list(ci: tuple[float, float] | None) -> list[float] | None:
    return list(ci) if ci is not None else None


def _per_run(runs: list[CellRun], boot: AucBootstrap) -> list[dict[str, Any]]:
    """Each run's within-day AUCs, gains and η (None when its teacher gain ≤ 0), in world order."""
    out = []
    position = dict.fromkeys(boot.world_keys, 0)
    for run in runs:
        key = world_key(run.config)
        w, s = boot.world_keys.index(key), position[key]
        position[key] += 1
        aucs = {f"auc_{m}": boot.per_run[m][w][s] for m in boot.models}
        gain_t = aucs["auc_teacher"] - aucs["auc_student_raw"]
        gain_d = aucs["auc_student_distill"] - aucs["auc_student_raw"]
        out.append({"seed": run.seed, "world": key, **aucs, "teacher_gain": gain_t, "distill_gain": gain_d,
                    "eta": gain_d / gain_t if gain_t > 0 else None})
    return out


def _without_seed(overrides: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(overrides))
    if isinstance(out.get("teacher"), dict):
        out["teacher"].pop("seed", None)
        if not out["teacher"]:
            out.pop("teacher")
    entries = [{k: v for k, v in entry.items() if k != "seed"} for entry in out.get("students", [])]
    entries = [entry for entry in entries if set(entry) != {"name"}]
    if entries:
        out["students"] = entries
    else:
        out.pop("students", None)
    return out


def _mean_losses(losses: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not losses:
        return None
    keys = ("task_loss", "distill_ce", "distill_kl", "ce_over_task", "alpha_ce_over_task", "kl_over_task",
            "alpha_kl_over_task")
    out: dict[str, Any] = {"alpha": losses[0]["alpha"]}
    for key in keys:
        values = [x[key] for x in losses if x.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def _per_day(predictions: list[pl.DataFrame]) -> list[dict[str, Any]]:
    """AUC of each model per report day, averaged over seeds."""
    days = predictions[0]["report_day"].unique(maintain_order=True).to_list()
    rows = []
    for day in days:
        row: dict[str, Any] = {"day": day}
        for model in MODELS:
            values = []
            for frame in predictions:
                part = frame.filter(pl.col("report_day") == day)
                scores = part[model].to_numpy()
                if _finite(scores):
                    values.append(auc(scores, part["label"].to_numpy()))
            if values:
                row[model] = float(np.mean(values))
        rows.append(row)
    return rows


PAIRED_MODELS = ("teacher", "student_raw")  # what two cells must share, row for row, to be paired
SWEPT_TEACHER = "teacher@"  # a teacher sweep's per-cell teacher column: teacher@<cell>


def paired_bootstrap(cells: dict[str, list[CellRun]], *, n_boot: int, seed: int = 0,
                     shared: tuple[str, ...] = PAIRED_MODELS) -> AucBootstrap | None:
    """One bootstrap over several cells' distilled students that share `shared` models and rows.

    Models: the shared ones (`teacher` and `student_raw` by default), `bayes` (where p_true exists)
    and each cell's distilled main tower under the cell's name; when the teacher is not shared, each
    cell's teacher as `teacher@<cell>`. Runs are matched by (world, model seed); None when the cells
    do not share those predictions (different teachers or student architectures), so no paired
    difference exists.
    """
    keyed = {name: {(world_key(r.config), r.seed): _predictions(r) for r in runs} for name, runs in cells.items()}
    keys = [(world_key(r.config), r.seed) for r in next(iter(cells.values()))]
    if any(set(k) != set(keys) for k in keyed.values()):
        return None
    merged = []
    for key in keys:
        frames = [k[key] for k in keyed.values()]
        base = frames[0]
        for other in frames[1:]:
            # The same checkpoints scored in another process: equal up to float summation order.
            if not other["sample_id"].equals(base["sample_id"]) or not all(
                    np.allclose(other[m].to_numpy(), base[m].to_numpy(), rtol=1e-5, atol=1e-7)
                    for m in shared):
                return None
        columns = {m: base[m] for m in shared}
        if base["p_true"].null_count() == 0:
            columns["bayes"] = base["p_true"]
        columns.update({name: k[key]["student_distill"] for name, k in keyed.items()})
        if "teacher" not in shared:
            columns.update({f"{SWEPT_TEACHER}{name}": k[key]["teacher"] for name, k in keyed.items()})
        merged.append((key, base.select("label", "report_day").with_columns(**columns)))
    models = tuple(c for c in merged[0][1].columns if c not in ("label", "report_day"))
    grouped: dict[str, list[pl.DataFrame]] = {}
    for (world, _), frame in merged:
        grouped.setdefault(world, []).append(frame)
    worlds = [World(w, fs[0]["label"].to_numpy().astype(np.float64), fs[0]["report_day"].to_numpy(),
                    [{m: f[m].to_numpy() for m in models} for f in fs]) for w, fs in grouped.items()]
    return bootstrap_aucs(worlds, models, n_boot=n_boot, seed=seed)


def ratio_entry(est: RatioEstimate) -> dict[str, Any]:
    """A ratio (η, Δη, ρ, η*) with both of its intervals and its numerator and denominator, as JSON."""
    return {"value": est.ratio, "ci": _list(est.ratio_ci), "ci_seed_level": _list(est.ratio_ci_seed_level),
            "numerator": est.numerator.point, "numerator_ci": list(est.numerator.ci),
            "numerator_ci_seed_level": _list(est.numerator_ci_seed_level),
            "denominator": est.denominator.point, "denominator_ci": list(est.denominator.ci),
            "seed_level_units": est.seed_level_units, "n_units": est.n_units, "note": est.reason}


def compare_cells(reference: str, cells: dict[str, list[CellRun]], *, n_boot: int,
                  seed: int = 0) -> dict[str, dict[str, Any]]:
    """Paired differences of every cell against `reference` (same teacher, baseline and rows): Δη with
    its intervals, whose numerator is the difference of the two distilled students' AUCs."""
    boot = paired_bootstrap(cells, n_boot=n_boot, seed=seed)
    if boot is None:
        return {}
    return {name: ratio_entry(ratio_estimate(boot, (name, reference), PAIRED_MODELS))
            for name in cells if name != reference}


def _difference(boot: AucBootstrap, model: str, reference: str) -> dict[str, Any]:
    """AUC(model) − AUC(reference), paired, with its bootstrap and seed-level intervals."""
    diff = boot.difference(model, reference)
    units, unit_name = boot.units(model, reference)
    return {"value": diff.point, "ci": list(diff.ci), "ci_seed_level": _list(t_interval(units, boot.level)),
            "seed_level_units": unit_name}


def compare_teachers(reference: str, cells: dict[str, list[CellRun]], *, n_boot: int,
                     seed: int = 0) -> dict[str, dict[str, Any]]:
    """A teacher sweep: cells that share the baseline and rows, each with its own teacher. Paired against
    `reference`: Δ teacher AUC and Δ distilled-student AUC (what a bigger teacher buys, and how much of it
    reaches the student); {} when the cells do not share the baseline's predictions."""
    boot = paired_bootstrap(cells, n_boot=n_boot, seed=seed, shared=("student_raw",))
    if boot is None:
        return {}
    ref_teacher = f"{SWEPT_TEACHER}{reference}"
    return {name: {"teacher_auc": boot.point[f"{SWEPT_TEACHER}{name}"],
                   "teacher_delta": _difference(boot, f"{SWEPT_TEACHER}{name}", ref_teacher),
                   "distilled_delta": _difference(boot, name, reference)}
            for name in cells}


def ceiling(distilled: list[CellRun], oracle: list[CellRun], *, n_boot: int, seed: int = 0) -> dict[str, Any] | None:
    """The transfer ceiling (DESIGN.md §4): G* = AUC(distilled from the oracle) − AUC(raw), the share
    of it the teacher's distillation reaches (ρ) and the share of the Bayes gap the oracle reaches (η*)."""
    boot = paired_bootstrap({"distilled": distilled, "oracle": oracle}, n_boot=n_boot, seed=seed)
    if boot is None:
        return None
    gain = _difference(boot, "oracle", "student_raw")
    out = {"oracle_gain": gain["value"], "oracle_gain_ci": gain["ci"],
           "oracle_gain_ci_seed_level": gain["ci_seed_level"],
           "auc_oracle_distilled": boot.point["oracle"],
           "rho": ratio_entry(ratio_estimate(boot, ("distilled", "student_raw"), ("oracle", "student_raw")))}
    if "bayes" in boot.models:
        out["bayes_gain"] = boot.point["bayes"] - boot.point["student_raw"]
        out["eta_star"] = ratio_entry(ratio_estimate(boot, ("oracle", "student_raw"), ("bayes", "student_raw")))
    return out


def summarize_experiment(experiment: Experiment, runs: dict[str, list[CellRun]], *,
                         n_boot: int | None) -> dict[str, Any]:
    """Every cell's row, paired differences against the experiment's reference cell, and (for the
    headline experiment) the headline with its transfer ceiling when the experiment has an oracle cell."""
    def boot_of(cell_runs: list[CellRun]) -> int:
        return n_boot or cell_runs[0].config.eval.bootstrap_samples

    cells = []
    for cell in experiment.cells:
        summary = summarize_cell(runs[cell.name], n_boot=boot_of(runs[cell.name]))
        summary.update(name=cell.name, label=cell.title)
        cells.append(summary)
    reference = experiment.reference or experiment.cells[0].name
    paired = compare_cells(reference, runs, n_boot=boot_of(runs[reference]))
    for summary in cells:
        summary["vs_reference"] = paired.get(summary["name"])
    out: dict[str, Any] = {"title": experiment.title, "paper": experiment.paper, "profile": experiment.profile,
                           "kind": experiment.kind, "note": experiment.note, "reference": reference, "cells": cells}
    if experiment.kind == "matched":
        out["matched"] = matched_comparison(experiment, cells, runs, n_boot=boot_of(runs[reference]))
    if experiment.kind == "teacher_sweep":
        out["teacher_sweep"] = compare_teachers(reference, runs, n_boot=boot_of(runs[reference]))
    if experiment.name == HEADLINE_EXPERIMENT:
        ceiling_of = (ceiling(runs[reference], runs[experiment.oracle], n_boot=boot_of(runs[reference]))
                      if experiment.oracle is not None else None)
        out["headline"] = headline(experiment.profile, next(c for c in cells if c["name"] == reference),
                                   runs[reference], ceiling_of)
    return out


def matched_comparison(experiment: Experiment, cells: list[dict[str, Any]], runs: dict[str, list[CellRun]], *,
                       n_boot: int, seed: int = 0) -> list[dict[str, Any]]:
    """Each group of cells (one variant at several α) at its best setting, paired with the reference
    group at its own best: what the variant costs once each is run at the α that suits it.

    A group's best cell is the one with the highest distillation gain (point estimate, the same rows every
    group is scored on); `at_grid_edge` says the optimum may lie outside the grid.
    """
    by_name = {c["name"]: c for c in cells}
    groups: dict[str, list[str]] = {}
    for cell in experiment.cells:
        groups.setdefault(cell.group or cell.name, []).append(cell.name)
    reference_group = next(c.group or c.name for c in experiment.cells if c.name == experiment.reference)
    best = {group: max(names, key=lambda n: by_name[n]["student_gain"]) for group, names in groups.items()}
    paired = compare_cells(best[reference_group], {best[g]: runs[best[g]] for g in groups}, n_boot=n_boot, seed=seed)
    out = []
    for group, names in groups.items():
        chosen = by_name[best[group]]
        out.append({
            "group": group, "cell": chosen["name"], "label": chosen["label"],
            "alpha": runs[chosen["name"]][0].config.student(STUDENT).distill.alpha,
            "alphas": [runs[n][0].config.student(STUDENT).distill.alpha for n in names],
            "at_grid_edge": best[group] in (names[0], names[-1]) and len(names) > 1,
            "student_gain": chosen["student_gain"], "student_gain_ci": chosen["student_gain_ci"],
            "eta": chosen["eta"], "eta_ci": chosen["eta_ci"], "eta_ci_seed_level": chosen["eta_ci_seed_level"],
            "vs_reference_best": paired.get(chosen["name"]),
        })
    return out


def headline(profile: str, cell: dict[str, Any], runs: list[CellRun],
             ceiling_of: dict[str, Any] | None) -> dict[str, Any]:
    """The `headline` block of the results JSON: absolute gains and the ceiling first, then η."""
    return {
        "profile": profile,
        "auc_aggregation": cell["auc_aggregation"],
        "teacher_gain": cell["teacher_gain"], "teacher_gain_ci": cell["teacher_gain_ci"],
        "teacher_gain_ci_seed_level": cell["teacher_gain_ci_seed_level"],
        "student_gain": cell["student_gain"], "student_gain_ci": cell["student_gain_ci"],
        "student_gain_ci_seed_level": cell["student_gain_ci_seed_level"],
        "ceiling": ceiling_of,
        "eta": cell["eta"], "eta_ci": cell["eta_ci"], "eta_ci_seed_level": cell["eta_ci_seed_level"],
        "eta_note": cell["eta_note"],
        "param_ratio": cell["params"]["ratio"],
        "params": cell["params"],
        "world_seeds": sorted({r.config.data.seed for r in runs if isinstance(r.config.data, SyntheticWorldConfig)}),
        "model_seeds": sorted({r.seed for r in runs}),
        "n_distinct_eval_rows": cell["n_distinct_eval_rows"],
        "seed_level_units": cell["seed_level_units"],
        "auc": cell["auc"], "auc_pooled": cell["auc_pooled"],
        "student": runs[0].config.student(STUDENT).model_dump(mode="json", exclude={"seed"}),
    }
