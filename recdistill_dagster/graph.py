"""The asset graph, defined once: every asset key, its partitions and its upstream rules.

Everything that needs the graph derives it from here: the assets' `AssetDep`s, the jobs and the
schedules (which keys train, which report), the lineage audit (which partitions a partition was built
from) and the rollback planner (which partitions are still valid). One teacher feeds N students
(DESIGN §4): the shared part (the evaluation log, the teacher's stream, checkpoint and logits) exists
once, and each configured student adds its own stream, dataset, distilled and baseline checkpoints
and report under keys prefixed with its name (`ranker/student_checkpoint`).

Keys are Dagster's user strings (`prefix/name`); this module imports no Dagster, so the audit and
the planner can be read and tested on their own.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import Enum
from typing import Literal

from recdistill_dagster.calendar import days_of_partition, previous_partition
from recdistill_dagster.config import CalendarConfig, PipelineConfig

EVAL_SAMPLES = "eval_samples"
TEACHER_SAMPLES = "teacher_samples"
TEACHER_CHECKPOINT = "teacher_checkpoint"
TEACHER_LOGITS = "teacher_logits"
TEACHER_HEALTH_CHECK = "teacher_health"
JOIN_COVERAGE_CHECK = "join_coverage"

GROUP_DATA = "data"
GROUP_TEACHER = "teacher"


class DayMapping(Enum):
    """How a partition of an asset maps to the partitions of one upstream asset."""

    SAME_DAY = "same day"
    PREVIOUS_DAY = "previous day"  # a self-dependent chain; the first training partition has none
    NEXT_DAY = "next day"  # a report scores the models after day d on day d+1
    TRAINED_DAYS = "trained days"  # the data days a training partition trains on (the batch window)


NodeKind = Literal["samples", "teacher_checkpoint", "teacher_logits", "dataset", "distilled", "baseline", "report"]


@dataclass(frozen=True)
class Edge:
    upstream: str
    mapping: DayMapping
    # False for an edge of the lineage that must not be declared to Dagster: the teacher's logits come
    # out of the checkpoint's step, and a previous-day edge on one key of that non-subsettable
    # multi-asset makes Dagster refuse every UI backfill ("targeted subset must match").
    declared: bool = True


@dataclass(frozen=True)
class AssetNode:
    key: str
    kind: NodeKind
    partitioning: Literal["data", "training"]
    group: str
    upstream: tuple[Edge, ...] = ()
    student: str | None = None
    step: str | None = None  # assets produced by one step (a multi-asset) share it
    checks: tuple[str, ...] = ()  # the asset checks its step evaluates (blocking ones stop the day)

    @property
    def trains(self) -> bool:
        return self.partitioning == "training"


@dataclass(frozen=True)
class StudentKeys:
    """The asset keys of one student (prefixed with its name)."""

    name: str

    @property
    def samples(self) -> str:
        return f"{self.name}/student_samples"

    @property
    def dataset(self) -> str:
        return f"{self.name}/student_dataset"

    @property
    def distilled(self) -> str:
        return f"{self.name}/student_checkpoint"

    @property
    def baseline(self) -> str:
        return f"{self.name}/baseline_checkpoint"

    @property
    def report(self) -> str:
        return f"{self.name}/transferability_report"


class AssetGraph:
    """The nodes in topological order (upstream before downstream) and the rules over them."""

    def __init__(self, students: Sequence[str]) -> None:
        self.students = tuple(students)
        samples_step = "sample_streams"
        nodes = [
            AssetNode(EVAL_SAMPLES, "samples", "data", GROUP_DATA, step=samples_step),
            AssetNode(TEACHER_SAMPLES, "samples", "data", GROUP_DATA, step=samples_step),
            *(AssetNode(StudentKeys(s).samples, "samples", "data", GROUP_DATA, student=s, step=samples_step)
              for s in self.students),
            AssetNode(TEACHER_CHECKPOINT, "teacher_checkpoint", "training", GROUP_TEACHER, step="teacher_training",
                      upstream=(Edge(TEACHER_SAMPLES, DayMapping.TRAINED_DAYS),
                                Edge(TEACHER_CHECKPOINT, DayMapping.PREVIOUS_DAY)),
                      checks=(TEACHER_HEALTH_CHECK,)),
            AssetNode(TEACHER_LOGITS, "teacher_logits", "training", GROUP_TEACHER, step="teacher_training",
                      upstream=(Edge(TEACHER_SAMPLES, DayMapping.TRAINED_DAYS),
                                Edge(TEACHER_CHECKPOINT, DayMapping.PREVIOUS_DAY, declared=False))),
        ]
        for name in self.students:
            keys = StudentKeys(name)
            nodes += [
                AssetNode(keys.dataset, "dataset", "training", name, student=name,
                          upstream=(Edge(keys.samples, DayMapping.TRAINED_DAYS),
                                    Edge(TEACHER_LOGITS, DayMapping.SAME_DAY)),
                          checks=(JOIN_COVERAGE_CHECK,)),
                AssetNode(keys.distilled, "distilled", "training", name, student=name,
                          upstream=(Edge(keys.dataset, DayMapping.SAME_DAY),
                                    Edge(keys.distilled, DayMapping.PREVIOUS_DAY))),
                AssetNode(keys.baseline, "baseline", "training", name, student=name,
                          upstream=(Edge(keys.samples, DayMapping.TRAINED_DAYS),
                                    Edge(keys.baseline, DayMapping.PREVIOUS_DAY))),
                AssetNode(keys.report, "report", "training", name, student=name,
                          upstream=(Edge(TEACHER_CHECKPOINT, DayMapping.SAME_DAY),
                                    Edge(keys.distilled, DayMapping.SAME_DAY),
                                    Edge(keys.baseline, DayMapping.SAME_DAY),
                                    Edge(EVAL_SAMPLES, DayMapping.NEXT_DAY),
                                    Edge(keys.report, DayMapping.PREVIOUS_DAY))),
            ]
        self.nodes: dict[str, AssetNode] = {node.key: node for node in nodes}

    @classmethod
    def of(cls, config: PipelineConfig) -> "AssetGraph":
        return cls([s.name for s in config.active_students])

    def node(self, key: str) -> AssetNode:
        try:
            return self.nodes[key]
        except KeyError:
            raise KeyError(f"unknown asset {key!r}; one of {', '.join(self.nodes)}") from None

    def student(self, name: str) -> StudentKeys:
        if name not in self.students:
            raise KeyError(f"unknown student {name!r}; one of {', '.join(self.students)}")
        return StudentKeys(name)

    def keys(self, *kinds: NodeKind) -> list[str]:
        return [node.key for node in self.nodes.values() if node.kind in kinds]

    @property
    def data_keys(self) -> list[str]:
        return [node.key for node in self.nodes.values() if not node.trains]

    @property
    def training_keys(self) -> list[str]:
        """Everything partitioned by training day, reports included, in topological order."""
        return [node.key for node in self.nodes.values() if node.trains]

    def checks_of(self, keys: Iterable[str]) -> list[tuple[str, str]]:
        """(asset, check) of the checks the steps of `keys` evaluate: what a run selecting them must include,
        and nothing else (Dagster adds every check targeting a selected asset, the freshness checks too)."""
        return [(key, check) for key in keys for check in self.node(key).checks]

    def step_of(self, key: str) -> list[str]:
        """The keys materialized by the same step as `key` (itself alone unless a multi-asset)."""
        step = self.node(key).step
        return [k for k, n in self.nodes.items() if n.step == step] if step else [key]

    def downstream(self, keys: Iterable[str]) -> list[str]:
        """`keys` with every asset that reads them, directly or not, and their steps' siblings."""
        selected = {k for key in keys for k in self.step_of(key)}
        for node in self.nodes.values():  # topological: one pass reaches the whole closure
            if any(edge.upstream in selected for edge in node.upstream if edge.upstream != node.key):
                selected.update(self.step_of(node.key))
        return [key for key in self.nodes if key in selected]

    def upstream_partitions(self, calendar: CalendarConfig, key: str, day: date) -> list[tuple[str, date]]:
        """The (asset, partition) pairs that the partition `day` of `key` was built from."""
        found: list[tuple[str, date]] = []
        for edge in self.node(key).upstream:
            found += [(edge.upstream, d) for d in mapped_days(calendar, edge.mapping, day)]
        return found


def mapped_days(calendar: CalendarConfig, mapping: DayMapping, day: date) -> list[date]:
    """The upstream partitions one edge maps the training partition `day` to."""
    if mapping is DayMapping.SAME_DAY:
        return [day]
    if mapping is DayMapping.NEXT_DAY:
        return [day + timedelta(days=1)]
    if mapping is DayMapping.TRAINED_DAYS:
        return days_of_partition(calendar, day)
    previous = previous_partition(calendar, day)
    return [previous] if previous is not None else []


def partition_ref(key: str, day: date) -> str:
    """How a partition is named in lineage metadata and messages: `ranker/student_checkpoint[2026-01-06]`."""
    return f"{key}[{day.isoformat()}]"
