"""Numbers of a benchmark cell over its seeds, read from what the pipeline wrote.

- η and the gains: the report partitions' stored predictions (models after day d scored on day
  d+1, unsampled), pooled over report days per seed, then over seeds (`pooled_seed_gains`).
- Loss magnitudes: the `task_loss` / `distill_loss` metadata of the `student_checkpoint`
  materializations in the cell's Dagster event log; the KL part of the distillation loss is the
  logged cross-entropy minus the entropy of the teacher targets (computed from the student dataset).
- Parameters: the report JSON.
"""

import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from bench.runner import STUDENT, CellRun
from models.debias import distill_logits
from models.metrics import SeedRun, auc, logloss, pooled_seed_gains
from recdistill_dagster import layout
from recdistill_dagster.data.schema import SAMPLING_COLUMNS, TEACHER_SAMPLING_COLUMNS
from recdistill_dagster.graph import StudentKeys

MODELS = ("teacher", "student_raw", "student_distill", "student_aux")


def _predictions(run: CellRun) -> pl.DataFrame:
    frames = []
    for day in run.config.calendar.training_days():
        frame = pl.read_parquet(run.home / layout.report_path(STUDENT, day, "predictions.parquet"))
        frames.append(frame.with_columns(report_day=pl.lit(day.isoformat())))
    return pl.concat(frames)


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


def summarize_cell(runs: list[CellRun], *, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """One table row: η with its two-level interval over seeds, AUCs, gains, parameters, losses."""
    config = runs[0].config
    predictions = [_predictions(run) for run in runs]
    seed_runs = [SeedRun(p["label"].to_numpy().astype(np.float64), {m: p[m].to_numpy() for m in MODELS})
                 for p in predictions]
    main = pooled_seed_gains(seed_runs, teacher="teacher", student_raw="student_raw",
                             student_distill="student_distill", n_boot=n_boot, seed=seed)
    aux_ok = all(_finite(r.scores["student_aux"]) for r in seed_runs)
    aux = (pooled_seed_gains(seed_runs, teacher="teacher", student_raw="student_raw",
                             student_distill="student_aux", n_boot=max(n_boot // 2, 20), seed=seed)
           if aux_ok else None)
    report = _report(runs[0])
    params = report["parameters"]
    aucs = {m: float(np.mean([auc(r.scores[m], r.labels) for r in seed_runs]))
            for m in MODELS if m != "student_aux" or aux_ok}
    has_truth = all(p["p_true"].null_count() == 0 for p in predictions)
    if has_truth:
        aucs["bayes"] = float(np.mean([auc(p["p_true"].to_numpy(), p["label"].to_numpy()) for p in predictions]))
    per_day = _per_day(predictions)
    pooled_frame = pl.concat(predictions)
    sources = getattr(config.data, "traffic_sources", None)
    losses = [x for run in runs if (x := _loss_magnitudes(run)) is not None]
    return {
        "seeds": [run.seed for run in runs],
        "n_eval_rows": main.n_rows,
        "report_days": [d.isoformat() for d in config.calendar.training_days()],
        "eta": main.eta, "eta_ci": list(main.eta_ci) if main.eta_ci else None,
        "eta_note": main.reason,
        "teacher_gain": main.teacher_gain, "teacher_gain_ci": list(main.teacher_gain_ci),
        "student_gain": main.distill_gain, "student_gain_ci": list(main.distill_gain_ci),
        "teacher_gain_significant": main.significant,
        "eta_aux_tower": aux.eta if aux else None,
        "eta_aux_tower_ci": list(aux.eta_ci) if aux and aux.eta_ci else None,
        "auc": aucs,
        "logloss": {m: float(np.mean([logloss(r.scores[m], r.labels) for r in seed_runs]))
                    for m in MODELS if m != "student_aux" or aux_ok},
        "per_seed": main.per_seed,
        "per_day": per_day,
        "params": {"teacher": params["teacher"], "student": params["student"], "served": params["served"],
                   "ratio": params["served_to_teacher"]},
        "calibration": calibration(pooled_frame, sources),
        "losses": _mean_losses(losses),
        "wall_seconds": sum(run.seconds for run in runs),
        "shared_from": {str(run.seed): {k: Path(v).name for k, v in run.shared_from.items()} for run in runs},
        "overrides": runs[0].overrides if len(runs) == 1 else _without_seed(runs[0].overrides),
    }


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
