"""Asset definitions, thin by design: read inputs, call `recdistill_dagster.steps`, return metadata."""

from assets.evaluation import build_evaluation_assets
from assets.samples import build_sample_assets
from assets.student import build_student_assets
from assets.teacher import build_teacher_assets
from recdistill_dagster.partitions import PipelinePartitions


def build_all_assets(partitions: PipelinePartitions) -> list:
    return [
        *build_sample_assets(partitions),
        *build_teacher_assets(partitions),
        *build_student_assets(partitions),
        *build_evaluation_assets(partitions),
    ]


__all__ = ["build_all_assets"]
