"""The MLflow model registry for served students: one version per day, a `champion` alias that moves
only on evidence (no Dagster import).

A day's main tower is registered as a new version of `<name>`. The alias `champion` (aliases
replace MLflow's deprecated stages) moves to it only when

1. that day's teacher health check and join-coverage check passed, and
2. its distilled AUC is not below the current champion's AUC on the same evaluation day (the
   caller scores the champion, `models:/<name>@champion`, on that day's evaluation rows).

Every decision is written as tags on the version (`recdistill.promotion`, the evaluation day, both
AUCs, the reason), so `alias_history` reads who was champion from when, and why others were not.
"""

import json
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

CHAMPION_ALIAS = "champion"
PROMOTION_TAG = "recdistill.promotion"  # JSON of the PromotionDecision
PROMOTED = "promoted"
KEPT = "kept"
LOGGED_MODEL_PREFIX = "models:/m-"
SNAPSHOT_TAG = "student_snapshot"  # the version's student snapshot id (its checkpoint's data version)


@dataclass(frozen=True)
class PromotionEvidence:
    eval_day: date
    distilled_auc: float
    checks: dict[str, bool]  # e.g. {"teacher_health": True, "join_coverage": True}
    champion_auc: float | None  # the current champion on the same evaluation day; None without a champion


@dataclass(frozen=True)
class PromotionDecision:
    version: str
    outcome: str  # PROMOTED | KEPT
    reason: str
    eval_day: str
    distilled_auc: float
    champion_version: str | None
    champion_auc: float | None


def decide(evidence: PromotionEvidence, version: str, champion_version: str | None) -> PromotionDecision:
    """The rule, without any registry call."""
    failed = sorted(name for name, passed in evidence.checks.items() if not passed)
    if not evidence.checks:
        outcome, reason = KEPT, "no checks were reported for this day"
    elif failed:
        outcome, reason = KEPT, f"check(s) failed: {', '.join(failed)}"
    elif champion_version is None:
        outcome, reason = PROMOTED, "no champion yet"
    elif evidence.champion_auc is None:
        outcome, reason = KEPT, f"champion v{champion_version} was not scored on {evidence.eval_day}"
    elif evidence.distilled_auc < evidence.champion_auc:
        outcome, reason = KEPT, (f"AUC {evidence.distilled_auc:.4f} below champion v{champion_version}'s "
                                 f"{evidence.champion_auc:.4f} on {evidence.eval_day}")
    else:
        outcome, reason = PROMOTED, (f"AUC {evidence.distilled_auc:.4f} ≥ champion v{champion_version}'s "
                                     f"{evidence.champion_auc:.4f} on {evidence.eval_day}")
    return PromotionDecision(version=version, outcome=outcome, reason=reason, eval_day=evidence.eval_day.isoformat(),
                             distilled_auc=evidence.distilled_auc, champion_version=champion_version,
                             champion_auc=evidence.champion_auc)


def register_version(client: MlflowClient, name: str, model_uri: str, run_id: str,
                     tags: dict[str, str] | None = None) -> ModelVersion:
    """A new version of `name` (created on first use) from a logged model (`models:/m-…` in MLflow 3,
    whose artifacts are the version's source, or a `runs:/` URI)."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Rec-Distill student main tower, one version per day")
    source, model_id = model_uri, None
    if model_uri.startswith(LOGGED_MODEL_PREFIX):
        model_id = "m-" + model_uri.removeprefix(LOGGED_MODEL_PREFIX)
        source = client.get_logged_model(model_id).artifact_location
    return client.create_model_version(name, source, run_id=run_id, tags=tags or {}, model_id=model_id)


def version_of_snapshot(client: MlflowClient, name: str, snapshot: str) -> ModelVersion | None:
    """The version registered for a student snapshot, if any: re-running a report registers nothing twice."""
    found = [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get(SNAPSHOT_TAG) == snapshot]
    return min(found, key=lambda v: int(v.version)) if found else None


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None


def promote_if_better(client: MlflowClient, name: str, version: str,
                      evidence: PromotionEvidence) -> PromotionDecision:
    """Decide, move the alias if promoted, and record the decision on the version."""
    current = champion(client, name)
    decision = decide(evidence, version, current.version if current is not None else None)
    if decision.outcome == PROMOTED:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    client.set_model_version_tag(name, version, PROMOTION_TAG, json.dumps(asdict(decision), sort_keys=True))
    return decision


def recorded_decision(version: ModelVersion) -> PromotionDecision | None:
    recorded = version.tags.get(PROMOTION_TAG)
    return PromotionDecision(**json.loads(recorded)) if recorded else None


def alias_history(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """Every version's recorded decision, oldest first, plus who holds the alias now."""
    holder = champion(client, name)
    rows = []
    for found in client.search_model_versions(f"name = '{name}'"):
        recorded = found.tags.get(PROMOTION_TAG)
        row = json.loads(recorded) if recorded else {"version": found.version, "outcome": "undecided"}
        row["champion_now"] = holder is not None and holder.version == found.version
        rows.append(row)
    return sorted(rows, key=lambda row: int(row["version"]))
