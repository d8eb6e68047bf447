"""The config system: profiles resolve, bad input fails with the key's path."""

from pathlib import Path

import pytest

from recdistill_dagster.config import ConfigError, available_profiles, load_config


def test_named_profiles_exist_and_validate() -> None:
    assert {"tiny", "demo", "bench", "movielens"} <= set(available_profiles())
    for profile in available_profiles():
        config = load_config(profile)
        assert config.profile == profile
        assert config.calendar.batch_end >= config.calendar.start_date


def test_unknown_key_names_its_path() -> None:
    with pytest.raises(ConfigError, match=r"teacher\.arch\.widht: Extra inputs are not permitted"):
        load_config("tiny", overrides={"teacher": {"arch": {"widht": 3}}})


def test_wrong_type_and_range_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"students\.0\.sampling\.negative_keep"):
        load_config("tiny", overrides={"students": [{"name": "ranker", "sampling": {"negative_keep": 0.0}}]})
    with pytest.raises(ConfigError, match=r"students\[prerank\]\.arch\.seq_len=10000 exceeds"):
        load_config("tiny", overrides={"students": [{"name": "prerank", "arch": {"seq_len": 10_000}}]})


def test_unknown_profile_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match=r"available: .*tiny"):
        load_config("nope")


def test_config_file_overrides_and_malformed_yaml(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("students:\n  - name: prerank\n    distill:\n      alpha: 0.25\n")
    config = load_config("tiny", good)
    assert config.student("prerank").distill.alpha == 0.25
    assert config.student("prerank").arch == load_config("tiny").student("prerank").arch  # the rest kept
    assert config.student("ranker").distill.alpha == load_config("tiny").student("ranker").distill.alpha
    bad = tmp_path / "bad.yaml"
    bad.write_text("students: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("tiny", bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("tiny", tmp_path / "missing.yaml")


def test_sampling_rates_must_match_traffic_sources() -> None:
    with pytest.raises(ConfigError, match="positive_keep_by_source has 2 rates"):
        load_config("tiny", overrides={"sampling": {"teacher": {"positive_keep_by_source": [1.0, 1.0]}}})


def test_calendar_days() -> None:
    calendar = load_config("tiny").calendar
    assert len(calendar.batch_window()) == calendar.batch_days
    assert calendar.training_days()[0] == calendar.batch_end
    assert len(calendar.training_days()) == calendar.streaming_days + 1
    assert (calendar.data_days()[-1] - calendar.last_training_day).days == 1


def test_code_location_refuses_a_malformed_config_file(tmp_path: Path) -> None:
    from recdistill_dagster.definitions import build_definitions

    bad = tmp_path / "typo.yaml"
    bad.write_text("students:\n  - {name: ranker, distil: {alpha: 2.0}}\n")
    with pytest.raises(ConfigError, match=r"students\.0\.distil: Extra inputs are not permitted"):
        build_definitions("tiny", tmp_path / "home", str(bad))


def test_the_old_single_student_section_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"student: Extra inputs are not permitted"):
        load_config("tiny", overrides={"student": {"distill": {"alpha": 1.0}}})


def test_a_fault_drill_lists_the_attempts_it_applies_to() -> None:
    drill = {"faults": {"teacher": {"day": "2026-01-04", "attempts": [2, 3]}}}
    assert load_config("tiny", overrides=drill).faults.teacher.attempts == (2, 3)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"faults.teacher.attempts: .*a list such as \[1\]"):
        load_config("tiny", overrides={"faults": {"teacher": {"day": "2026-01-04", "attempts": 1}}})
    with pytest.raises(ConfigError, match=r"faults.teacher.attempts: .*>= 1"):
        load_config("tiny", overrides={"faults": {"teacher": {"day": "2026-01-04", "attempts": [0]}}})


def test_oracle_soft_labels_need_a_synthetic_world() -> None:
    oracle = {"students": [{"name": "ranker", "distill": {"source": "oracle", "soft_label_rows": "teacher_stream"}}]}
    assert load_config("tiny", overrides=oracle).student("ranker").distill.source == "oracle"
    with pytest.raises(ConfigError, match="oracle needs p_true"):
        load_config("movielens", overrides=oracle)
