"""Every asset carries a code version derived from its stage's sources, so a code change shows as stale
for the assets it affects and for no other."""

from pathlib import Path

from recdistill_dagster.code_versions import ROOT, code_version, source_files, source_hash
from recdistill_dagster.definitions import build_definitions
from recdistill_dagster.graph import AssetGraph, NodeKind

STAGE_OF: dict[NodeKind, str] = {
    "samples": "recdistill_dagster.stages.samples",
    "teacher_checkpoint": "recdistill_dagster.stages.teacher",
    "teacher_logits": "recdistill_dagster.stages.teacher",
    "dataset": "recdistill_dagster.stages.dataset",
    "distilled": "recdistill_dagster.stages.student",
    "baseline": "recdistill_dagster.stages.student",
    "report": "recdistill_dagster.stages.evaluation",
}


def _relative(module: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in source_files(module)}


def test_every_asset_has_its_stages_code_version() -> None:
    defs = build_definitions("tiny")
    graph = AssetGraph.of(defs.resources["settings"].config())
    dagster_graph = defs.resolve_asset_graph()
    versions = {key.to_user_string(): dagster_graph.get(key).code_version for key in dagster_graph.get_all_asset_keys()}
    assert versions == {key: code_version(STAGE_OF[node.kind]) for key, node in graph.nodes.items()}


def test_a_stage_hashes_only_what_it_imports() -> None:
    samples, teacher, report = (_relative(STAGE_OF[k]) for k in ("samples", "teacher_checkpoint", "report"))
    assert "recdistill_dagster/stages/samples.py" in samples
    assert "recdistill_dagster/data/sampling.py" in samples
    # Editing the report, the teacher's model or the training loops does not touch the sample streams.
    assert not {"recdistill_dagster/stages/evaluation.py", "models/teacher.py", "models/training.py"} & samples
    assert "recdistill_dagster/report/estimate.py" not in teacher
    assert {"models/teacher.py", "models/training.py", "recdistill_dagster/health.py"} <= teacher
    assert {"recdistill_dagster/report/estimate.py", "models/metrics.py"} <= report
    assert "recdistill_dagster/config.py" not in samples | teacher | report  # configuration is not code


def test_a_source_change_changes_the_version_and_nothing_else_does(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    a, b = tmp_path / "pkg" / "a.py", tmp_path / "pkg" / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    before = source_hash([a, b], root=tmp_path)
    assert source_hash([b, a], root=tmp_path) == before  # deterministic, order-free
    b.write_text("y = 3\n")
    assert source_hash([a, b], root=tmp_path) != before
