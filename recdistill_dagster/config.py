"""The one configuration system: strict pydantic models plus named profiles.

Every tunable of the pipeline lives here. Profiles (`recdistill_dagster/profiles/*.yaml`) are
partial overrides deep-merged onto the defaults below; a user file or dict can override further.
Unknown keys are errors (`extra="forbid"`), so a typo never silently falls back to a default.

This module imports no Dagster: models/ and the data code use it directly.
"""

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recdistill_dagster.data.schema import SPARSE_FEATURES

PROFILE_DIR = Path(__file__).parent / "profiles"
MOVIELENS_ENV = "RECDISTILL_MOVIELENS"
DEFAULT_MOVIELENS_PATH = str(
    Path(__file__).resolve().parents[2] / "shared" / "datasets" / "movielens-100k"
)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the offending key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data sources


class SyntheticWorldConfig(StrictModel):
    """A deterministic synthetic ads/feed world (see recdistill_dagster/data/synthetic.py)."""

    kind: Literal["synthetic"] = "synthetic"
    seed: int = 7
    n_users: int = Field(4000, ge=10)
    n_items_initial: int = Field(3000, ge=10)
    n_items_new_per_day: int = Field(60, ge=0)
    n_categories: int = Field(24, ge=2)
    n_creators: int = Field(600, ge=2)
    n_segments: int = Field(8, ge=1)
    traffic_sources: tuple[str, ...] = ("feed", "search", "ads")
    traffic_source_share: tuple[float, ...] = (0.6, 0.25, 0.15)
    impressions_per_day: int = Field(60000, ge=100)
    # Behaviour events each user has before day 0; the history reaches >= 1,000 events.
    prehistory_len: int = Field(1000, ge=1)
    behaviour_events_per_day: int = Field(12, ge=1)
    # How many most-recent behaviour events each logged row carries in `history`.
    logged_history_len: int = Field(256, ge=1)
    favourite_creators_per_user: int = Field(4, ge=1)
    # Intercept is calibrated so the unsampled click rate is close to this.
    target_click_rate: float = Field(0.04, gt=0.0, lt=0.5)
    # How often a user's short-lived intent changes from one day to the next.
    intent_switch_prob: float = Field(0.5, ge=0.0, le=1.0)
    popularity_drift: float = Field(0.15, ge=0.0)
    # Scale of a random category x category interaction: the click logit gains the mean, over the logged
    # history, of M[event's category, candidate's category] (M ~ N(0, scale^2), full rank). 0 = off (the
    # default world). A capacity-hungry term: representing it takes as many embedding dimensions as there
    # are categories, and every row's history teaches it (the teacher-scale curve's world, bench/).
    category_complementarity: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _sources_match(self) -> "SyntheticWorldConfig":
        if len(self.traffic_sources) != len(self.traffic_source_share):
            raise ValueError("traffic_sources and traffic_source_share must have equal length")
        if abs(sum(self.traffic_source_share) - 1.0) > 1e-6:
            raise ValueError("traffic_source_share must sum to 1")
        return self

    @property
    def n_traffic_sources(self) -> int:
        return len(self.traffic_sources)


class MovieLensConfig(StrictModel):
    """MovieLens-format ratings (ratings/items/users parquet) read as a CTR task."""

    kind: Literal["movielens"] = "movielens"
    path: str = Field(default_factory=lambda: os.environ.get(MOVIELENS_ENV, DEFAULT_MOVIELENS_PATH))
    label_min_rating: int = Field(4, ge=1, le=5)
    logged_history_len: int = Field(100, ge=1)

    @property
    def n_traffic_sources(self) -> int:
        return 1


DataSourceConfig = Annotated[SyntheticWorldConfig | MovieLensConfig, Field(discriminator="kind")]


# --------------------------------------------------------------------------- sampling


class SamplingPolicy(StrictModel):
    """How a logged training stream is sampled from the day's impressions.

    Negatives are kept with probability `negative_keep` (so r_s = 1/negative_keep); positives
    are kept with the probability of their traffic source. Every sampled row carries
    r_s, r_pos, p_x, b_s so the debias function can be applied per row.
    """

    negative_keep: float = Field(gt=0.0, le=1.0)
    positive_keep_by_source: tuple[float, ...]
    r_pos: float = Field(1.0, gt=0.0, le=1.0)
    b_s: float = 0.0

    @model_validator(mode="after")
    def _rates_valid(self) -> "SamplingPolicy":
        if not self.positive_keep_by_source:
            raise ValueError("positive_keep_by_source must list one rate per traffic source")
        if any(not 0.0 < rate <= 1.0 for rate in self.positive_keep_by_source):
            raise ValueError("positive_keep_by_source rates must be in (0, 1]")
        return self

    @property
    def r_s(self) -> float:
        return 1.0 / self.negative_keep

    def p_x(self, source: int) -> float:
        return self.positive_keep_by_source[source]


    def keeps_subset_of(self, other: "SamplingPolicy") -> bool:
        """Every row this policy keeps, `other` keeps too (both draw from the same per-row uniform)."""
        return self.negative_keep <= other.negative_keep and all(
            mine <= theirs
            for mine, theirs in zip(self.positive_keep_by_source, other.positive_keep_by_source, strict=True)
        )


class SamplingConfig(StrictModel):
    """The teacher's stream; each student's own policy lives in its `students` entry. One seed for
    all streams: every policy draws the same per-row uniform, so a student whose rates are at most
    the teacher's keeps a subset of the teacher's rows (and every student row has a teacher logit)."""

    # The teacher keeps more negatives than the students: the data-volume scaling axis.
    teacher: SamplingPolicy = SamplingPolicy(
        negative_keep=0.5, positive_keep_by_source=(1.0, 1.0, 0.5)
    )
    seed: int = 11


# --------------------------------------------------------------------------- calendar


OPEN = "open"


def utc_today() -> date:
    """Today by the clock (UTC, as Dagster's daily partitions): the day that is not complete yet."""
    return datetime.now(UTC).date()


class CalendarConfig(StrictModel):
    """Which days exist: a batch window, then daily streaming partitions.

    Training partitions start at the last day of the batch window (that partition *is* the batch
    phase); each report partition d evaluates the models after day d on day d+1, so data exists
    one day past the last training day. `streaming_days: open` has no last day: every day up to the
    last complete one by the clock exists, and the schedules train each one the day after (a
    deployment run every day); its report d waits for day d+1 to be complete.
    """

    start_date: date = date(2026, 1, 1)
    batch_days: int = Field(5, ge=1)
    streaming_days: int | Literal["open"] = 7

    @field_validator("streaming_days")
    @classmethod
    def _non_negative(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be >= 0, or `open` (no last day)")
        return value

    @property
    def open_ended(self) -> bool:
        return self.streaming_days == OPEN

    @property
    def batch_end(self) -> date:
        return self.start_date + timedelta(days=self.batch_days - 1)

    def last_training_day_at(self, today: date) -> date:
        """The last training partition as of `today` (open-ended: the last complete day, yesterday)."""
        if isinstance(self.streaming_days, int):
            return self.batch_end + timedelta(days=self.streaming_days)
        return today - timedelta(days=1)

    def last_data_day_at(self, today: date) -> date:
        """The last data partition as of `today`: one past the last training day, or yesterday when open-ended."""
        if self.open_ended:
            return today - timedelta(days=1)
        return self.last_training_day_at(today) + timedelta(days=1)

    @property
    def last_training_day(self) -> date:
        return self.last_training_day_at(utc_today())

    @property
    def last_data_day(self) -> date:
        return self.last_data_day_at(utc_today())

    def batch_window(self) -> list[date]:
        return [self.start_date + timedelta(days=i) for i in range(self.batch_days)]

    def training_days(self, today: date | None = None) -> list[date]:
        last = self.last_training_day_at(today or utc_today())
        return [self.batch_end + timedelta(days=i) for i in range((last - self.batch_end).days + 1)]

    def data_days(self, today: date | None = None) -> list[date]:
        last = self.last_data_day_at(today or utc_today())
        return [self.start_date + timedelta(days=i) for i in range((last - self.start_date).days + 1)]

    def day_index(self, day: date) -> int:
        return (day - self.start_date).days


# --------------------------------------------------------------------------- models


class OptimConfig(StrictModel):
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(512, ge=2)
    # The batch phase trains to convergence: more epochs (and optionally bigger batches).
    batch_phase_epochs: int = Field(2, ge=1)
    batch_phase_batch_size: int | None = None
    streaming_epochs: int = Field(1, ge=1)
    grad_clip: float | None = 5.0


class TeacherArch(StrictModel):
    """Token-mixing backbone over feature tokens + long-sequence encoder."""

    embed_dim: int = Field(48, ge=2)
    width: int = Field(128, ge=4)
    # Feature tokens fed to the mixer; width must be divisible by it (parameter-free mixing).
    n_tokens: int = Field(8, ge=1)
    depth: int = Field(2, ge=1)
    ffn_mult: int = Field(2, ge=1)
    seq_len: int = Field(256, ge=1)
    compressed_tokens: int = Field(4, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _tokens_divide_width(self) -> "TeacherArch":
        if self.width % self.n_tokens:
            raise ValueError(f"width {self.width} must be divisible by n_tokens {self.n_tokens}")
        return self


class TeacherConfig(StrictModel):
    arch: TeacherArch = TeacherArch()
    optim: OptimConfig = OptimConfig()
    # Logits are recorded in the training forward pass; in a multi-epoch batch phase this picks
    # which epoch's forward pass is recorded (one logit per trained sample either way). "first":
    # every logit is a prediction on a row the teacher had not trained on yet, like a streaming
    # day's; "last" echoes labels the teacher has already fitted (seen once while tuning on bench:
    # recorded-logit AUC 0.83-0.84 on the student's rows vs 0.79-0.80 for "first", the teacher's
    # held-out level). "last" logs a warning in the run; the benchmark's `record_epoch` cells compare both.
    record_epoch: Literal["first", "last"] = "first"
    seed: int = 101


TowerMode = Literal["single_distill", "single_mixed", "decoupled_distill", "decoupled_mixed"]
TeacherTarget = Literal["none", "teacher_own", "student_raw", "exact"]
SoftLabelRows = Literal["student_stream", "teacher_stream"]
SoftLabelSource = Literal["teacher", "oracle"]


# The candidate and user terms of the student read these whatever else it drops.
ALWAYS_READ_FEATURES = ("user_id", "item_id")


class StudentArch(StrictModel):
    """Small backbone over a short history, with main and auxiliary towers.

    `seq_len` is how much history the student reads; `attention_len` (None: all of it; at most
    `seq_len`) is the newest part it embeds and attends over. Events beyond `attention_len` reach the student only
    through the parameter-free match counters (HistoryMatch: share of the window sharing the
    candidate's item / category / creator), a compressed long-history view that costs integer
    comparisons, no parameters and no embedding lookups.
    """

    # The recipe of the transferability benchmark (bench/, README "Transferability benchmark"):
    # the capacity sits in the shared backbone, the towers are thin heads, so what the auxiliary
    # tower learns from the teacher shapes the representation the main tower reads; the 256-event
    # history reaches the student only through the match counters, attention sees the newest 20.
    embed_dim: int = Field(12, ge=2)
    backbone_hidden: tuple[int, ...] = (256, 128)
    tower_hidden: int = Field(8, ge=1)
    seq_len: int = Field(256, ge=1)
    attention_len: int | None = Field(20, ge=1)
    # Sparse feature families whose embeddings the backbone reads (None: all of SPARSE_FEATURES). A
    # pre-ranking model reads fewer; user and item ids are always read (the candidate and user terms).
    sparse_features: tuple[str, ...] | None = None
    # The parameter-free match counters over the whole `seq_len` window (off: attention only).
    history_counters: bool = True
    towers: TowerMode = "decoupled_mixed"

    @model_validator(mode="after")
    def _known_features(self) -> "StudentArch":
        if self.sparse_features is not None:
            unknown = [f for f in self.sparse_features if f not in SPARSE_FEATURES]
            if unknown:
                raise ValueError(f"unknown sparse feature(s) {unknown}; known: {', '.join(SPARSE_FEATURES)}")
            missing = [f for f in ALWAYS_READ_FEATURES if f not in self.sparse_features]
            if missing:
                raise ValueError(f"sparse_features must include {', '.join(missing)}")
        return self

    @property
    def attended_len(self) -> int:
        return self.seq_len if self.attention_len is None else min(self.attention_len, self.seq_len)

    @property
    def read_sparse_features(self) -> tuple[str, ...]:
        """The feature families read, in SPARSE_FEATURES order."""
        chosen = set(self.sparse_features or SPARSE_FEATURES)
        return tuple(f for f in SPARSE_FEATURES if f in chosen)


class DistillConfig(StrictModel):
    # α = 3 with the exact target: measured on bench (see bench/results/previous-protocol/transferability.md, "α
    # sweep" and "Debias variants"); the paper's student-side f_S on the raw logit is
    # `teacher_target: student_raw`.
    alpha: float = Field(3.0, ge=0.0)
    temperature: float = Field(1.0, gt=0.0)
    teacher_target: TeacherTarget = "exact"
    in_batch_phase: bool = True
    in_streaming: bool = True
    # Which rows carry the distillation loss: the student's own sampled stream, or the teacher's whole
    # logged stream (the student's rows plus the ones its sampler dropped, which still have a recorded
    # teacher logit; they train the distillation loss only, the task losses keep the student's rows).
    soft_label_rows: SoftLabelRows = "student_stream"
    # Where the soft labels come from: the teacher's recorded logits, or (synthetic worlds) an oracle
    # teacher, logit(p_true) moved into the teacher's sampling space: the transfer ceiling G*.
    source: SoftLabelSource = "teacher"


StudentRole = Literal["ranking", "prerank"]
# Names that would collide with the shared streams in asset keys and storage paths.
RESERVED_STUDENT_NAMES = frozenset({"teacher", "eval"})
DEFAULT_STUDENT_SAMPLING = SamplingPolicy(negative_keep=0.1, positive_keep_by_source=(1.0, 1.0, 0.5))


class StudentConfig(StrictModel):
    """One student distilled from the shared teacher's recorded logits (DESIGN §4, 1-to-N).

    Each student has its own architecture, sampling policy (a subset of the teacher's stream),
    distillation settings and serving role; it gets its own sample stream, joined dataset, distilled
    and baseline checkpoints and report, under asset keys prefixed with its `name`. The field
    defaults are the ranking recipe; `role` says which serving stage the main tower is exported for.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    role: StudentRole = "ranking"
    enabled: bool = True  # off: the student is not part of the asset graph (kept in the file)
    arch: StudentArch = StudentArch()
    optim: OptimConfig = OptimConfig()
    distill: DistillConfig = DistillConfig()
    sampling: SamplingPolicy = DEFAULT_STUDENT_SAMPLING
    seed: int = 202

    @model_validator(mode="after")
    def _name_free(self) -> "StudentConfig":
        if self.name in RESERVED_STUDENT_NAMES:
            raise ValueError(f"student name {self.name!r} is reserved ({', '.join(sorted(RESERVED_STUDENT_NAMES))})")
        return self


# The default profiles' two students: the ranker (the recipe above) and a pre-ranking model distilled
# from the same ranking teacher (cross-stage): fewer feature families, a 20-event history read by
# attention only, a smaller backbone, and a sparser sample of the traffic (a fifth of the ranker's
# negatives).
DEFAULT_STUDENTS: tuple[StudentConfig, ...] = (
    StudentConfig(name="ranker"),
    StudentConfig(
        name="prerank",
        role="prerank",
        arch=StudentArch(embed_dim=8, backbone_hidden=(64, 32), tower_hidden=8, seq_len=20, attention_len=None,
                         sparse_features=("user_id", "item_id", "category", "traffic_source"),
                         history_counters=False),
        sampling=SamplingPolicy(negative_keep=0.02, positive_keep_by_source=(1.0, 1.0, 0.5)),
        seed=303,
    ),
)


# --------------------------------------------------------------------------- evaluation, runtime


class EvalConfig(StrictModel):
    bootstrap_samples: int = Field(200, ge=10)
    ci_level: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 303
    # Scoring batch (health check, reports). 512 keeps the teacher's (batch × 256-event history) activations
    # in cache: measured 1.7× the rows/s of 4096 for the teacher on one core, the students alike (bench-perf).
    batch_size: int = Field(512, ge=2)
    # Serving cost in the report: wall time per prediction of the served modules at this batch size,
    # the median of `serving_repeats` timed calls after one warm-up call.
    serving_batch_size: int = Field(512, ge=1)
    serving_repeats: int = Field(5, ge=1)
    # ONNX serving export (beside pt2): onnxruntime must equal PyTorch within `onnx_tolerance` on the
    # first `onnx_parity_rows` evaluation rows; latency (batch 1) and throughput (batch 512) are the
    # median of `serving_repeats` timed calls per runtime, for the student and the teacher.
    onnx_tolerance: float = Field(1e-5, gt=0)
    onnx_parity_rows: int = Field(4096, ge=2)


class DistributedConfig(StrictModel):
    """Teacher (and, with `students`, student) training under `torchrun` (DDP) launched from the asset
    through Dagster Pipes.

    `nproc_per_node: 1` trains in the step's own process (the default); N > 1 starts N ranks on this host
    (gloo on CPU, nccl on GPUs, one GPU per rank). Each rank trains on its share of every global batch,
    so the result equals one process up to the floating-point order of the gradient sums.
    """

    nproc_per_node: int = Field(1, ge=1)
    threads_per_rank: int = Field(1, ge=1)  # torch threads in each rank (ranks × threads ≤ cores)
    students: bool = False  # the students' distilled and baseline checkpoints under torchrun too


# Imported once by the multiprocess executor's forkserver, then shared by every forked step process.
PRELOAD_MODULES = ("torch", "polars", "numpy", "mlflow", "dagster", "models", "recdistill_dagster.stages.teacher",
                   "recdistill_dagster.stages.student", "recdistill_dagster.stages.evaluation")


class ExecutorConfig(StrictModel):
    """How the steps of one Dagster run execute (runs launched by the daemon, the UI or `dagster job`;
    `execute_in_process`, as the CLI and the tests use, always runs in-process).

    `in_process`: one process, steps one after the other. `multiprocess`: independent steps (each
    student's distilled and baseline checkpoints, N students) in parallel, up to `max_concurrent`, each
    step forked from a forkserver that has already imported `preload_modules` (torch among them).
    """

    kind: Literal["in_process", "multiprocess"] = "in_process"
    max_concurrent: int = Field(2, ge=1)
    preload_modules: list[str] = Field(default_factory=lambda: list(PRELOAD_MODULES))


class RuntimeConfig(StrictModel):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    log_every_steps: int = Field(100, ge=1)
    distributed: DistributedConfig = DistributedConfig()
    executor: ExecutorConfig = ExecutorConfig()


class JoinConfig(StrictModel):
    """Join coverage of the student dataset: below `coverage_warn` the check warns, below
    `coverage_floor` it fails and blocks the student's training for the day."""

    coverage_warn: float = Field(0.95, ge=0.0, le=1.0)
    coverage_floor: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> "JoinConfig":
        if self.coverage_floor > self.coverage_warn:
            raise ValueError("join.coverage_floor must not exceed join.coverage_warn")
        return self


class HealthConfig(StrictModel):
    """The blocking `teacher_health` check on every teacher snapshot.

    The snapshot is compared with the last good one on the day's held-out rows (impressions the
    teacher did not train on), its debiased mean prediction with the day's observed click rate, and
    its recorded logits with the last good snapshot's. Any failure marks the snapshot unhealthy and
    stops the day's downstream assets; the rollback sensor then repairs the chain.
    """

    max_auc_drop: float = Field(0.02, ge=0.0, le=1.0)  # held-out AUC, last good minus this snapshot
    # Held-out rows come from the sources where the teacher's sampler leaves out both classes, weighted
    # back to the day's mix. Fewer positives or negatives there (a teacher keeping every negative
    # leaves only dropped positives out): the whole day is used; a smaller whole day skips it.
    min_holdout_positives: int = Field(20, ge=1)
    max_calibration_error: float = Field(0.5, gt=0.0)  # |mean predicted / observed - 1| on the day
    max_logit_mean_shift: float = Field(1.5, gt=0.0)  # |mean - mean_ref| in units of the ref's std
    max_logit_std_ratio: float = Field(3.0, gt=1.0)  # std / std_ref (or its inverse), both floored
    min_logits_for_shift: int = Field(200, ge=2)  # fewer held-out rows: the shift test is skipped
    # Spreads below this count as this: a near-constant reference would turn tiny moves into huge shifts.
    logit_std_floor: float = Field(0.5, gt=0.0)


class TeacherFault(StrictModel):
    """Make one day's teacher training go bad on the materializations (attempts) of it that it names.

    Attempt n is the n-th snapshot of the day in the registry (its earlier snapshots + 1): `[1]` is the
    day's first training (a transient fault: the retrain is healthy), `[1, 2]` a fault that survives one
    retrain. On a day already trained, name the next attempt; a materialization the drill skips says so
    in its run log.
    """

    day: date
    mode: Literal["divergence", "nan"] = "divergence"
    attempts: tuple[int, ...] = (1,)
    lr_multiplier: float = Field(1000.0, gt=1.0)  # divergence: the learning rate for that day

    @field_validator("attempts", mode="before")
    @classmethod
    def _attempt_numbers(cls, value: Any) -> Any:
        if isinstance(value, int):
            raise ValueError(
                f"names the attempts the drill applies to, a list such as [{value}] (attempt n = the n-th "
                "snapshot of the day); a number alone is ambiguous"
            )
        return value

    @field_validator("attempts")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(n < 1 for n in value):
            raise ValueError("lists attempt numbers >= 1 (at least one)")
        return value


class FaultConfig(StrictModel):
    """Fault injection for drills and scenario tests; everything is off by default."""

    # Fraction of teacher logit records lost between the teacher and the student's join.
    drop_logit_fraction: float = Field(0.0, ge=0.0, le=1.0)
    drop_logit_days: tuple[date, ...] = ()  # empty: every day
    seed: int = 17
    teacher: TeacherFault | None = None
    # Days whose upstream impressions have not arrived (an outage): their data partitions fail.
    missing_data_days: tuple[date, ...] = ()

    def drops_logits_on(self, day: date) -> bool:
        return self.drop_logit_fraction > 0 and (not self.drop_logit_days or day in self.drop_logit_days)


class ScheduleConfig(StrictModel):
    """When the daily increment runs (cron, UTC) and by when a day's students must exist."""

    data_cron: str = "30 0 * * *"  # the sample streams of the day that just ended
    training_cron: str = "30 1 * * *"  # the teacher and every student on it, then the reports it allows
    # Open-ended calendars: a student checkpoint of day D still missing at this time of D+1 is late
    # (its freshness check fails).
    freshness_deadline_cron: str = "0 6 * * *"


class PipelineConfig(StrictModel):
    profile: str = "custom"
    data: DataSourceConfig = SyntheticWorldConfig()
    sampling: SamplingConfig = SamplingConfig()
    calendar: CalendarConfig = CalendarConfig()
    teacher: TeacherConfig = TeacherConfig()
    students: tuple[StudentConfig, ...] = DEFAULT_STUDENTS
    eval: EvalConfig = EvalConfig()
    join: JoinConfig = JoinConfig()
    health: HealthConfig = HealthConfig()
    faults: FaultConfig = FaultConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    schedules: ScheduleConfig = ScheduleConfig()

    @property
    def active_students(self) -> tuple[StudentConfig, ...]:
        """The enabled students, in configuration order: the ones the asset graph builds."""
        return tuple(s for s in self.students if s.enabled)

    def student(self, name: str) -> StudentConfig:
        for spec in self.active_students:
            if spec.name == name:
                return spec
        raise ConfigError(f"no enabled student {name!r}; enabled: {', '.join(s.name for s in self.active_students)}")

    @model_validator(mode="after")
    def _consistent(self) -> "PipelineConfig":
        names = [s.name for s in self.students]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"students: duplicate name(s) {', '.join(duplicates)}")
        if not self.active_students:
            raise ValueError("students: at least one student must be enabled")
        n_sources = self.data.n_traffic_sources
        teacher_policy = self.sampling.teacher
        policies = [("sampling.teacher", teacher_policy)] + [(f"students[{s.name}].sampling", s.sampling)
                                                             for s in self.students]
        for where, policy in policies:
            if len(policy.positive_keep_by_source) != n_sources:
                raise ValueError(
                    f"{where}.positive_keep_by_source has {len(policy.positive_keep_by_source)} rates but the "
                    f"data source has {n_sources} traffic source(s)"
                )
        for spec in self.students:
            if not spec.sampling.keeps_subset_of(teacher_policy):
                raise ValueError(
                    f"students[{spec.name}].sampling keeps rows the teacher's stream drops (negative_keep "
                    f"{spec.sampling.negative_keep} vs {teacher_policy.negative_keep}, positive keep "
                    f"{list(spec.sampling.positive_keep_by_source)} vs "
                    f"{list(teacher_policy.positive_keep_by_source)}): "
                    "those rows would never have a teacher logit; keep every rate at most the teacher's"
                )
        oracles = [s.name for s in self.students if s.distill.source == "oracle"]
        if oracles and not isinstance(self.data, SyntheticWorldConfig):
            raise ValueError(f"students[{', '.join(oracles)}].distill.source: oracle needs p_true, which only "
                             f"the synthetic world has ({self.data.kind} has none)")
        if self.calendar.open_ended and not isinstance(self.data, SyntheticWorldConfig):
            raise ValueError(
                "calendar.streaming_days: open needs a source that has every day (the synthetic world); "
                f"{self.data.kind} covers a fixed range of days: give streaming_days a number"
            )
        logged = self.data.logged_history_len
        lengths = [("teacher.arch.seq_len", self.teacher.arch.seq_len)] + [
            (f"students[{s.name}].arch.seq_len", s.arch.seq_len) for s in self.students]
        for name, seq_len in lengths:
            if seq_len > logged:
                raise ValueError(
                    f"{name}={seq_len} exceeds data.logged_history_len={logged}: rows carry "
                    "only that much history"
                )
        return self


# --------------------------------------------------------------------------- profiles


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _named_entries(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, Mapping) and "name" in v for v in value)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` onto `base`: mappings merge key by key, lists of named entries (`students`) merge
    entry by entry on `name` (a new name is appended), anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        elif _named_entries(value) and _named_entries(current) and current is not None:
            names = [entry["name"] for entry in value]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ConfigError(f"{key}: duplicate name(s) {', '.join(map(str, duplicates))}")
            entries = {entry["name"]: dict(entry) for entry in current}
            for entry in value:
                entries[entry["name"]] = deep_merge(entries.get(entry["name"], {}), entry)
            merged[key] = list(entries.values())
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def _format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        location = ".".join(str(part) for part in err["loc"]) or "<root>"
        lines.append(f"  - {location}: {err['msg']}")
    return "\n".join(lines)


ConfigFiles = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


def load_config(
    profile: str = "demo",
    config_file: ConfigFiles = None,
    overrides: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Resolve defaults <- profile <- config file(s), in order <- overrides, validated strictly."""
    profile_path = PROFILE_DIR / f"{profile}.yaml"
    if not profile_path.exists():
        raise ConfigError(
            f"unknown profile {profile!r}; available: {', '.join(available_profiles())}"
        )
    # Start from the full defaults so a partial override of a nested section keeps the rest of it;
    # `data` is left out because its defaults depend on the source kind the profile picks.
    raw: dict[str, Any] = PipelineConfig().model_dump(mode="json", exclude={"data"})
    raw = deep_merge(raw, {"profile": profile, **_read_yaml(profile_path)})
    source = f"profile {profile!r}"
    files = [config_file] if isinstance(config_file, str | os.PathLike) else list(config_file or [])
    for name in (f for f in files if f):
        path = Path(name)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        raw = deep_merge(raw, _read_yaml(path))
        source += f" + {path}"
    if overrides:
        raw = deep_merge(raw, overrides)
        source += " + overrides"
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None
