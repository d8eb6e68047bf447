"""Teacher-snapshot rollback, end to end through Dagster: health check → sensor → repair run.

1. A transient divergence makes day d's teacher bad inside a run of 5 streaming days. The blocking
   `teacher_health` check stops that day's student side; the rollback sensor records the bad snapshot
   and re-materializes the chains from d in one run. Afterwards no partition of either student (ranker
   and the cross-stage prerank) has the bad snapshot in its lineage, and both match a clean run.
2. An operator marks a snapshot bad after the fact, once its cause is fixed (a silent drill that applied to
   the first attempt only): the sensor re-materializes every partition of both students derived from it
   and every later day of their chains, in date order, exactly once; the replaced snapshots are
   `superseded`.
3. An operator marks a snapshot bad whose cause was not fixed: the repair retrains the same weights; the
   new snapshot is recorded as bad and identical, the sensor says so and launches nothing more.
"""

from datetime import timedelta

import pytest
from dagster import AssetKey

from recdistill_dagster.lineage import snapshot_statuses, teacher_snapshots, trace
from recdistill_dagster.operator import explain_mark_bad
from tests.scenarios.conftest import STUDENTS, assert_same_metrics, failure_text

pytestmark = pytest.mark.scenario

STUDENT_ASSETS = tuple(f"{s}/{name}" for s in STUDENTS
                       for name in ("student_dataset", "student_checkpoint", "transferability_report"))


def _bad_snapshot_in_lineage(pipeline, bad: str) -> list[str]:
    config = pipeline.config
    carriers = []
    for day in config.calendar.training_days():
        for asset in STUDENT_ASSETS:
            nodes = trace(pipeline.instance, config, asset, day)
            assert all(node.materialized for node in nodes), f"{asset} {day}: lineage incomplete"
            if bad in teacher_snapshots(nodes):
                carriers.append(f"{asset} {day}")
    return carriers


@pytest.mark.parametrize("mode", ["divergence", "nan"])
def test_bad_teacher_is_rolled_back_and_the_chain_repaired(make_pipeline, clean_reference, mode) -> None:
    reference_config = clean_reference.config
    days = reference_config.calendar.training_days()
    bad_day = days[2]  # the second streaming day
    pipeline = make_pipeline(f"rollback-{mode}", f"faults: {{teacher: {{day: {bad_day}, mode: {mode}}}}}\n")
    config = pipeline.config
    assert pipeline.data_range(config.calendar.start_date, config.calendar.last_data_day).success

    for day in days:  # the schedule's daily runs; the sensor ticks between them
        result = pipeline.training_day(day)
        if day == bad_day:
            assert not result.success
            assert "teacher_health failed" in failure_text(result)
            for student in STUDENTS:
                assert day.isoformat() not in pipeline.instance.get_materialized_partitions(
                    AssetKey([student, "student_checkpoint"]))
            (bad,) = [r for r in pipeline.registry.for_partition(day)]
            assert bad.status == "unhealthy" and bad.attempt == 1
            tick = pipeline.tick()
            assert tick.run_requests, pipeline.log
            assert pipeline.registry.get(bad.snapshot_id).status == "bad"
            assert pipeline.registry.get(bad.snapshot_id).detected_at is not None
        else:
            assert result.success, failure_text(result)
            assert not pipeline.tick().run_requests  # nothing to repair: a skip with its reason

    # The retrained day continued from the last good snapshot and passed its check.
    retrained = pipeline.registry.for_partition(bad_day)[-1]
    assert retrained.status == "good" and retrained.attempt == 2
    assert retrained.parent_snapshot == pipeline.registry.for_partition(bad_day - timedelta(days=1))[-1].snapshot_id
    assert _bad_snapshot_in_lineage(pipeline, bad.snapshot_id) == []
    for student in STUDENTS:
        nodes = trace(pipeline.instance, config, f"{student}/student_checkpoint", days[-1])
        statuses = snapshot_statuses(pipeline.registry, nodes)
        assert statuses and all(info["status"] == "good" for info in statuses.values())
        assert not any(node.stale_inputs for node in nodes)
        assert_same_metrics(pipeline.report(days[-1], student), clean_reference.report(days[-1], student),
                            tolerance=1e-6)
    # Idempotent: another tick launches nothing.
    assert not pipeline.tick().run_requests


def test_operator_rollback_cascades_through_every_later_day(make_pipeline) -> None:
    days = make_pipeline("probe").config.calendar.training_days()
    bad_day = days[2]
    # The cause: a learning rate ×2 on the first attempt of the day, which the health check does not see.
    drill = f"faults: {{teacher: {{day: {bad_day}, lr_multiplier: 2.0, attempts: [1]}}}}\n"
    pipeline = make_pipeline("operator", drill)
    config = pipeline.config
    assert pipeline.data_range(config.calendar.start_date, config.calendar.last_data_day).success
    for day in days:
        assert pipeline.training_day(day).success
    (bad,) = pipeline.registry.for_partition(bad_day)
    assert bad.status == "good"  # it passed its check: only the operator knows
    before = {asset: pipeline.instance.get_materialized_partitions(AssetKey.from_user_string(asset))
              for asset in STUDENT_ASSETS}
    assert _bad_snapshot_in_lineage(pipeline, bad.snapshot_id)  # it feeds the student side today

    pipeline.registry.mark_bad(bad.snapshot_id, reason="late data-quality finding", detected_by="operator")
    tick = pipeline.tick()
    (request,) = tick.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == bad_day.isoformat()
    assert request.tags["dagster/asset_partition_range_end"] == days[-1].isoformat()
    assert {k.to_user_string() for k in request.asset_selection} >= {"teacher_checkpoint", *STUDENT_ASSETS}

    assert _bad_snapshot_in_lineage(pipeline, bad.snapshot_id) == []
    for asset in STUDENT_ASSETS:  # every day from the bad one on was rebuilt, none before it
        rebuilt = {day.isoformat() for day in days if day >= bad_day}
        key = AssetKey.from_user_string(asset)
        assert pipeline.instance.get_materialized_partitions(key) == before[asset]
        assert len(pipeline.instance.fetch_materializations(key, limit=100).records) == len(days) + len(rebuilt)
    for student in STUDENTS:  # the baselines never read the teacher: not rebuilt
        key = AssetKey([student, "baseline_checkpoint"])
        assert len(pipeline.instance.fetch_materializations(key, limit=100).records) == len(days)
    assert not pipeline.tick().run_requests  # idempotent: the same repair is never launched twice
    repaired = pipeline.registry.for_partition(bad_day)[-1]
    assert repaired.status == "good" and repaired.weights_sha256 != bad.weights_sha256
    for day in days[3:]:  # the later days' old snapshots were replaced, not found bad
        old, new = pipeline.registry.for_partition(day)
        assert (old.status, old.superseded_by, new.status) == ("superseded", new.snapshot_id, "good")


def test_an_unfixed_cause_is_reproduced_and_reported_as_identical(clean_reference) -> None:
    """Last in the module: it leaves the shared clean pipeline with a bad day."""
    pipeline = clean_reference
    days = pipeline.config.calendar.training_days()
    bad_day = days[2]
    (bad,) = pipeline.registry.for_partition(bad_day)
    before = pipeline.registry.get(bad.snapshot_id)
    marked = pipeline.registry.mark_bad(bad.snapshot_id, reason="late finding, cause not fixed", detected_by="operator")
    said = explain_mark_bad(pipeline.instance, pipeline.config, pipeline.registry, before, marked, "tiny")
    assert "current partition(s) descend from it" in said[1] and f"{bad_day}..{days[-1]}" in said[1]
    assert "teacher_rollback_sensor is stopped" in said[2] and "backfill" in said[2]
    assert "reproduces the same weights" in said[3]

    pipeline.tick(expect_success=False)  # the repair retrains the same weights: its health check fails
    assert "weights identical to bad snapshot" in failure_text(pipeline.runs[-1])
    original, reproduced = pipeline.registry.for_partition(bad_day)
    assert original.status == "bad" and original.snapshot_id == bad.snapshot_id
    assert reproduced.status == "bad" and reproduced.identical_to == bad.snapshot_id
    assert reproduced.weights_sha256 == original.weights_sha256
    tick = pipeline.tick()
    assert not tick.run_requests  # and no further repair: it would retrain the same weights again
    assert f"identical to bad snapshot {bad.snapshot_id}" in (tick.skip_message or "")
    print("sensor:", tick.skip_message)
