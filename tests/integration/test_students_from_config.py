"""Adding a student is a configuration change only: a third student in a YAML file gets its stream,
dataset, checkpoints and report from the one teacher, through Dagster, on `tiny`."""

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from recdistill_dagster import layout
from recdistill_dagster.config import ConfigError, load_config
from recdistill_dagster.definitions import DAILY_TRAINING_JOB, SAMPLE_STREAMS_JOB, build_definitions
from recdistill_dagster.graph import AssetGraph

pytestmark = pytest.mark.integration

THIRD = """
calendar: {streaming_days: 1}
students:
  - name: ranker
    enabled: false
  - name: mobile
    role: prerank
    arch: {embed_dim: 4, backbone_hidden: [8], tower_hidden: 4, seq_len: 4, sparse_features: [user_id, item_id]}
    optim: {lr: 0.01, batch_size: 64, batch_phase_epochs: 2}
    sampling: {negative_keep: 0.05, positive_keep_by_source: [1.0, 1.0, 0.5]}
"""


def test_a_third_student_by_configuration_alone(tmp_path: Path) -> None:
    config_file = tmp_path / "three.yaml"
    config_file.write_text(THIRD)
    config = load_config("tiny", config_file)
    assert [s.name for s in config.active_students] == ["prerank", "mobile"]  # ranker disabled, mobile added
    assert config.student("mobile").arch.embed_dim == 4
    assert config.student("prerank").arch == load_config("tiny").student("prerank").arch  # merged by name

    defs = build_definitions("tiny", tmp_path / "home", str(config_file))
    keys = AssetGraph.of(config).student("mobile")
    instance = DagsterInstance.ephemeral()
    for day in config.calendar.data_days():
        assert defs.resolve_job_def(SAMPLE_STREAMS_JOB).execute_in_process(
            partition_key=day.isoformat(), instance=instance).success
    training = defs.resolve_job_def(DAILY_TRAINING_JOB)
    selection = [AssetKey.from_user_string(k) for k in ("teacher_checkpoint", "teacher_logits", keys.dataset,
                                                        keys.distilled, keys.baseline, keys.report)]
    for day in config.calendar.training_days():
        assert training.execute_in_process(partition_key=day.isoformat(), instance=instance,
                                           asset_selection=selection).success
    for key in (keys.samples, keys.dataset, keys.distilled, keys.baseline, keys.report):
        assert instance.get_materialized_partitions(AssetKey.from_user_string(key)), key
    last = config.calendar.training_days()[-1]
    assert (tmp_path / "home" / layout.report_path("mobile", last)).exists()
    assert "mobile" in (tmp_path / "home" / layout.INDEX_PATH).read_text()
    assert not instance.get_materialized_partitions(AssetKey.from_user_string("prerank/student_checkpoint"))


def test_student_entries_are_validated() -> None:
    with pytest.raises(ConfigError, match="duplicate name"):
        load_config("tiny", overrides={"students": [{"name": "x"}, {"name": "x"}]})
    with pytest.raises(ConfigError, match="reserved"):
        load_config("tiny", overrides={"students": [{"name": "teacher"}]})
    with pytest.raises(ConfigError, match="keeps rows the teacher's stream drops"):
        load_config("tiny", overrides={"students": [{"name": "greedy", "sampling": {
            "negative_keep": 0.9, "positive_keep_by_source": [1.0, 1.0, 0.5]}}]})
    with pytest.raises(ConfigError, match="at least one student"):
        load_config("tiny", overrides={"students": [{"name": "ranker", "enabled": False},
                                                    {"name": "prerank", "enabled": False}]})
    with pytest.raises(ConfigError, match="unknown sparse feature"):
        load_config("tiny", overrides={"students": [{"name": "ranker", "arch": {"sparse_features": ["nope"]}}]})
