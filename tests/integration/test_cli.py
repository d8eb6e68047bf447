"""The project's CLI on a fresh state folder (a SQLite instance with this project's dagster.yaml): a failure
ends with one paragraph and no stack trace; a range backfill records every check evaluation with its
day; what it prints points to the right `make` targets."""

from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from recdistill_dagster.cli import _ui_hints, main
from recdistill_dagster.graph import JOIN_COVERAGE_CHECK, TEACHER_CHECKPOINT, TEACHER_HEALTH_CHECK

pytestmark = pytest.mark.integration


# Fewer epochs, one student, a small bootstrap: the CLI's behaviour, not the models, is under test.
QUICK = """teacher: {optim: {batch_phase_epochs: 1}}
students: [{name: ranker, optim: {batch_phase_epochs: 1}}, {name: prerank, enabled: false}]
eval: {bootstrap_samples: 10}
"""


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RECDISTILL_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "state" / "dagster"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    (tmp_path / "quick.yaml").write_text(QUICK)
    monkeypatch.setenv("RECDISTILL_CONFIG", str(tmp_path / "quick.yaml"))  # the CLI's --config default
    return tmp_path / "state"


@pytest.mark.scenario  # two CLI runs on a fresh instance: minutes, so with the scenarios
def test_a_failure_is_one_paragraph_and_a_range_records_days(state: Path, capsys: pytest.CaptureFixture) -> None:
    # The first streaming day before the batch partition exists: its data is written, its training fails.
    assert main(["backfill", "2026-01-03", "2026-01-03", "--profile", "tiny"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "Stack Trace" not in out.err and "Not executing" not in out.err
    (paragraph,) = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert paragraph.startswith("error: teacher_checkpoint, teacher_logits [2026-01-03] failed (run ")
    assert "teacher_checkpoint partition 2026-01-02 has not been materialized" in paragraph  # the reason
    assert "materialize or backfill it first" in paragraph  # what to do
    assert "add --verbose" in paragraph and "make ui PROFILE=tiny" in paragraph

    # A range (the batch partition and that day): one run, every check evaluated per day.
    assert main(["backfill", "2026-01-02", "2026-01-03", "--profile", "tiny"]) == 0
    with DagsterInstance.get() as instance:
        for asset, check in ((TEACHER_CHECKPOINT, TEACHER_HEALTH_CHECK),
                             ("ranker/student_dataset", JOIN_COVERAGE_CHECK)):
            key = AssetCheckKey(AssetKey.from_user_string(asset), check)
            records = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
            # (the failed run planned one for 2026-01-03 too)
            assert {r.partition for r in records} == {"2026-01-02", "2026-01-03"}, asset  # none without a day


def test_the_hints_name_the_profile_and_a_state_folder_that_is_not_the_default(tmp_path: Path) -> None:
    default = (Path.cwd() / ".state" / "tiny").resolve()
    dagster, mlflow = _ui_hints("tiny", default, default / "dagster")
    assert "make ui PROFILE=tiny  (http://127.0.0.1:3000)" in dagster and "make mlflow-ui PROFILE=tiny " in mlflow
    (elsewhere, _) = _ui_hints("tiny", tmp_path, tmp_path / "dagster")
    assert f"make ui PROFILE=tiny RECDISTILL_HOME={tmp_path}" in elsewhere
