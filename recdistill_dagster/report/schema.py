"""The typed transferability report of one student and one day (stored as JSON next to its predictions).

Two scopes: `daily` (the models after day d scored on day d+1) and `cumulative` (every report day so
far). Cumulated AUCs are within-day: the mean over report days of each day's AUC, so a positive of one
day is never ranked against a negative of another day scored by a different model state (which would
reward day-to-day calibration, not ranking). Their intervals come from the days' stored bootstrap
replicates, so cumulating costs the same on day 100 as on day 2.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict

AUC_AGGREGATION = "within-day: mean over report days of each day's AUC"
Interval = tuple[float, float]


class ReportModelBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Gains(ReportModelBase):
    teacher_gain: float
    teacher_gain_ci: Interval
    distill_gain: float
    distill_gain_ci: Interval
    eta: float | None  # distill gain / teacher gain; None when the teacher gain is not significant
    eta_ci: Interval | None
    significant: bool  # the teacher gain's interval lies above zero
    note: str | None = None  # why η is not measurable
    n_boot: int
    level: float


class Scope(ReportModelBase):
    days: list[str]  # the report days covered
    n_eval: int  # evaluation rows (distinct: every day's rows are that day's own)
    positives: int
    auc: dict[str, float | None]  # per model key of report.models, and "bayes" (synthetic data)
    logloss: dict[str, float | None]
    mean_predicted: dict[str, float | None]  # on the unsampled scale
    observed_rate: float | None
    mean_p_true: float | None
    gains: Gains


class CalibrationBin(ReportModelBase):
    """Sums over the rows whose predicted probability falls in one fixed bin: they add up over days."""

    low: float
    high: float
    n: int
    sum_predicted: float
    sum_label: float
    sum_p_true: float | None


class LossSummary(ReportModelBase):
    """The distilled student's loss magnitudes on its training day (last epoch), from its checkpoint."""

    alpha: float
    task_loss: float | None
    distill_loss: float | None  # None when the day did not distill
    history: list[dict[str, float]]  # {step, task_loss, distill_loss} every runtime.log_every_steps


class Parameters(ReportModelBase):
    teacher: int
    student: int  # both towers (what trains)
    served: int  # the exported main tower
    served_to_teacher: float


class RuntimeSpeed(ReportModelBase):
    """One runtime's serving speed: median wall time of a call at batch 1, rows per second at batch 512."""

    latency_ms: float
    throughput_rows_per_s: float


class ServedExport(ReportModelBase):
    """A model exported to ONNX (inputs sparse, dense, history; dynamic batch), checked against PyTorch."""

    onnx: str  # URL of the .onnx in the artifact store
    max_abs_diff: float  # |PyTorch − onnxruntime|, largest over the compared evaluation rows
    rows_compared: int
    torch: RuntimeSpeed
    onnxruntime: RuntimeSpeed


class ServingCost(ReportModelBase):
    """Measured serving cost (medians of repeats, this machine: noisy where the machine is shared)."""

    batch_size: int
    student_us: float  # PyTorch, per prediction at `batch_size`
    teacher_us: float
    latency_batch: int = 1
    throughput_batch: int = 512
    onnx_tolerance: float | None = None  # what `max_abs_diff` must stay within
    student: ServedExport | None = None  # the served main tower; None in reports written before ONNX export
    teacher: ServedExport | None = None

    @property
    def speedup(self) -> float:
        return self.teacher_us / self.student_us if self.student_us > 0 else float("nan")


class TransferabilityReport(ReportModelBase):
    version: str  # this materialization (`<student>/report@day#run`)
    student: str
    role: Literal["ranking", "prerank"]
    profile: str
    day: str  # the training partition whose models are scored
    eval_day: str  # the day they are scored on
    auc_aggregation: str = AUC_AGGREGATION
    daily: Scope
    cumulative: Scope
    calibration: dict[str, list[CalibrationBin]]  # the day's bins per model key
    losses: LossSummary
    snapshots: dict[str, str]  # teacher / distilled / baseline snapshot ids
    mlflow_runs: dict[str, str | None]
    teacher_snapshots_in_student: list[str]
    parameters: Parameters
    serving: ServingCost
    inputs: dict[str, str]  # lineage: partition ref → version consumed
    predictions: str  # URL of the day's stored predictions
    replicates: str  # URL of the day's bootstrap replicates (the cumulated intervals read them)
