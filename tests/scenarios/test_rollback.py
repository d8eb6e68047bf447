"""Teacher-snapshot rollback, end to end through Dagster: health check → sensor → repair run.

1. A transient divergence makes day d's teacher bad inside a run of 5 streaming days. The blocking
   `teacher_health` check stops that day's student side; the rollback sensor records the bad snapshot
   and re-materializes the chains from d in one run. Afterwards no partition of either student (ranker
   and the cross-stage prerank) has the bad snapshot in its lineage, and both match a clean run.
2. An operator marks a snapshot bad after the fact: the sensor re-materializes every partition of both
   students derived from it and every later day of their chains, in date order, exactly once.
"""

from datetime import timedelta

import pytest
from dagster import AssetKey

from recdistill_dagster.lineage import snapshot_statuses, teacher_snapshots, trace
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


def test_operator_rollback_cascades_through_every_later_day(clean_reference) -> None:
    pipeline = clean_reference
    config = pipeline.config
    days = config.calendar.training_days()
    bad_day = days[2]
    (bad,) = pipeline.registry.for_partition(bad_day)
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
