"""Every asset carries a code version derived from its sources, so a code change shows as stale."""

from recdistill_dagster.code_versions import SOURCES, code_version, source_hash
from recdistill_dagster.definitions import build_definitions

STEP_OF = {"eval_samples": "samples", "teacher_samples": "samples", "student_samples": "samples",
           "teacher_checkpoint": "teacher", "teacher_logits": "teacher", "student_dataset": "student_dataset",
           "student_checkpoint": "student", "student_baseline_checkpoint": "student",
           "transferability_report": "report"}


def test_every_asset_has_its_steps_code_version() -> None:
    graph = build_definitions("tiny").resolve_asset_graph()
    versions = {key.to_user_string(): graph.get(key).code_version for key in graph.get_all_asset_keys()}
    assert versions == {asset: code_version(step) for asset, step in STEP_OF.items()}
    assert set(STEP_OF.values()) == set(SOURCES)


def test_a_source_change_changes_the_version_and_nothing_else_does(tmp_path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "b.py").write_text("y = 2\n")
    before = source_hash(("pkg/*.py",), root=tmp_path)
    assert source_hash(("pkg/*.py",), root=tmp_path) == before  # deterministic
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    assert source_hash(("pkg/*.py",), root=tmp_path) == before
    (tmp_path / "pkg" / "b.py").write_text("y = 3\n")
    assert source_hash(("pkg/*.py",), root=tmp_path) != before
