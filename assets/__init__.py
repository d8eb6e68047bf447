"""Asset definitions, thin by design: build a stage context, call a stage, turn its result into metadata.

The graph (`recdistill_dagster.graph`) decides the keys and the edges; these modules only define how
each node is materialized: the day's sample streams, the teacher (once), and per student its dataset,
distilled and baseline checkpoints and report.
"""

from typing import Any

from assets.samples import build_sample_assets
from assets.students import build_student_assets
from assets.teacher import build_teacher_assets
from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.graph import AssetGraph
from recdistill_dagster.partitions import PipelinePartitions


def build_all_assets(config: PipelineConfig, graph: AssetGraph, partitions: PipelinePartitions) -> list[Any]:
    return [
        *build_sample_assets(config, graph, partitions),
        *build_teacher_assets(graph, partitions),
        *build_student_assets(config.active_students, graph, partitions),
    ]


__all__ = ["build_all_assets"]
