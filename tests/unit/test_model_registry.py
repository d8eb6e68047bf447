"""The champion rule: checks first, then the distilled AUC against the champion's on the same day."""

from datetime import date

from recdistill_dagster.model_registry import KEPT, PROMOTED, PromotionEvidence, decide

DAY = date(2026, 1, 4)
PASSED = {"teacher_health": True, "join_coverage": True}


def _decide(auc: float, champion_auc: float | None, checks: dict[str, bool] = PASSED,
            champion: str | None = "3") -> tuple[str, str]:
    decision = decide(PromotionEvidence(DAY, auc, checks, champion_auc), "4", champion)
    return decision.outcome, decision.reason


def test_first_version_with_passing_checks_becomes_champion() -> None:
    assert _decide(0.70, None, champion=None)[0] == PROMOTED


def test_not_below_the_champion_on_the_same_day_promotes_and_below_keeps() -> None:
    assert _decide(0.71, 0.71)[0] == PROMOTED  # "not below": a tie moves the alias
    outcome, reason = _decide(0.70, 0.71)
    assert outcome == KEPT and "below champion v3" in reason and "2026-01-04" in reason


def test_failed_or_missing_checks_and_an_unscored_champion_keep_the_alias() -> None:
    outcome, reason = _decide(0.99, 0.70, {"teacher_health": False, "join_coverage": True})
    assert outcome == KEPT and "teacher_health" in reason
    assert _decide(0.99, None, champion=None, checks={})[0] == KEPT
    outcome, reason = _decide(0.99, None)
    assert outcome == KEPT and "not scored" in reason
