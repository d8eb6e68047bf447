"""Stage: the evidence a served student is promoted on (no MLflow: the registry calls live in the asset layer).

A day's distilled main tower may become the served model (`champion`) only when

- every teacher snapshot it learned from is usable (health check passed, not marked bad) and
- its joined dataset passed the join-coverage check (coverage at or above `join.coverage_warn`),

and its AUC on the report's evaluation day is not below the current champion's AUC on the same rows.
`served_module_auc` scores any served module (the champion as loaded from the registry) on exactly the
rows and with exactly the AUC the report uses for the distilled student; the report calls it in its own
pass over the evaluation day (no second read and conversion of the day).
"""

from datetime import date, timedelta

import numpy as np
import torch

from models.features import FeatureTensors, frame_to_tensors
from models.metrics import auc
from recdistill_dagster import layout
from recdistill_dagster.config import StudentConfig
from recdistill_dagster.registry import SnapshotRegistry
from recdistill_dagster.stages.context import StageContext
from recdistill_dagster.stages.dataset import coverage_verdict, read_manifest
from recdistill_dagster.stages.inputs import load_samples

TEACHER_HEALTH = "teacher_health"
JOIN_COVERAGE = "join_coverage"


def promotion_checks(ctx: StageContext, student: StudentConfig, partition: date,
                     teacher_snapshots: list[str]) -> dict[str, bool]:
    """{teacher_health, join_coverage} verdicts of the day the distilled student trained on."""
    registry = SnapshotRegistry(ctx.store)
    manifest = read_manifest(ctx, student, partition, f"{student.name} promotion {partition}")
    coverage = coverage_verdict(ctx.config.join, float(manifest.stats["coverage"]))
    return {
        # Every snapshot registered (its step finished) and usable (health passed, not marked bad since).
        TEACHER_HEALTH: bool(teacher_snapshots) and all(registry.get(s) is not None and registry.is_usable(s)
                                                        for s in teacher_snapshots),
        JOIN_COVERAGE: coverage.passed,
    }


def served_module_auc(module: torch.nn.Module, tensors: FeatureTensors, labels: np.ndarray, *, history_len: int,
                      batch_size: int, device: torch.device) -> float:
    """AUC of a served module (sparse, dense, history (B, history_len) → click probability (B,)) on rows
    already converted; `tensors` may carry a longer history, of which the newest `history_len` columns are fed.

    The module is called as served: a registry model is an exported program, which has no train/eval mode
    to switch and checks its input shapes."""
    scores = []
    with torch.inference_mode():
        for index in torch.arange(len(tensors)).split(batch_size):
            batch = tensors.slice(index).to(device)
            history = batch.history[:, batch.history.shape[1] - history_len:]
            scores.append(module(batch.sparse, batch.dense, history).float().cpu().numpy())
    probabilities = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
    return auc(probabilities.astype(np.float64), labels.astype(np.float64))


def served_auc(ctx: StageContext, student: StudentConfig, partition: date, module: torch.nn.Module) -> float:
    """AUC of a served module on the report's evaluation day, read and converted on its own (to check a
    model served elsewhere; the report scores the registry's champion in its own pass)."""
    eval_day = partition + timedelta(days=1)
    frame = load_samples(ctx.store, layout.samples_path("eval", eval_day), "eval_samples", eval_day)
    return served_module_auc(module, frame_to_tensors(frame, student.arch.seq_len, compact_history=True),
                             frame["label"].to_numpy(), history_len=student.arch.seq_len,
                             batch_size=ctx.config.eval.batch_size, device=ctx.device)
