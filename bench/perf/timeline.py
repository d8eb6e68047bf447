"""Where a run's time goes: exclusive wall time per stage, by wrapping the pipeline's own functions.

`install()` replaces each listed function, in every loaded project module that holds it, with a
wrapper that books its wall time (minus the time of wrapped calls inside it) under a label. What no
wrapper covers is the rest of the wall time: in a Dagster run, Dagster's own bookkeeping (step
orchestration, events, metadata, the run storage); in the plain script, the script's own glue.
The wrappers cost a `perf_counter` pair per call and are installed on both sides of a comparison.
"""

import contextlib
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.perf.measure import reset_high_water_mark

Labeller = Callable[..., str]


def _status_mb(field_name: str) -> float:
    """A memory figure of this process from /proc/self/status (kB there), in MB; 0 where unreadable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0


@dataclass
class Timeline:
    totals: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    events: list[dict[str, Any]] = field(default_factory=list)  # inclusive time of each call of `tracked` labels
    tracked: tuple[str, ...] = ("report",)
    # memory=True: each stage's own peak RSS above what the process held when it started (the kernel's
    # high-water mark is read and reset at every stage boundary, so every stage, not only the largest,
    # shows its peak; `peak_mb` keeps the largest reading of the whole run).
    memory: bool = False
    peaks_mb: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    peak_mb: float = 0.0
    _stack: list[list[Any]] = field(default_factory=list)  # [label, started, inner seconds, entry RSS, peak RSS]

    def _fold_high_water_mark(self) -> float:
        """The peak since the last boundary, folded into every open stage; the mark restarts from now."""
        peak = _status_mb("VmHWM")
        for frame in self._stack:
            frame[4] = max(frame[4], peak)
        self.peak_mb = max(self.peak_mb, peak)
        reset_high_water_mark()
        return peak

    def enter(self, label: str) -> None:
        entry = 0.0
        if self.memory:
            self._fold_high_water_mark()
            entry = _status_mb("VmRSS")
        self._stack.append([label, time.perf_counter(), 0.0, entry, entry])

    def exit(self, detail: str | None = None) -> None:
        if self.memory:
            self._fold_high_water_mark()
        label, started, inner, entry, peak = self._stack.pop()
        elapsed = time.perf_counter() - started
        self.totals[label] += elapsed - inner
        self.calls[label] += 1
        if self.memory:
            self.peaks_mb[label] = max(self.peaks_mb[label], peak - entry)
        if self._stack:
            self._stack[-1][2] += elapsed
        if any(label.startswith(t) for t in self.tracked):
            self.events.append({"label": label, "seconds": elapsed, "detail": detail})

    @contextlib.contextmanager
    def span(self, label: str, detail: str | None = None) -> Iterator[None]:
        self.enter(label)
        try:
            yield
        finally:
            self.exit(detail)

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals)

    def reset(self) -> None:
        self.totals.clear()
        self.calls.clear()
        self.events.clear()


def _wrap(timeline: Timeline, function: Callable[..., Any], labeller: Labeller,
          detail: Callable[..., str | None] | None) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with timeline.span(labeller(*args, **kwargs), detail(*args, **kwargs) if detail else None):
            return function(*args, **kwargs)

    wrapper.__wrapped__ = function  # type: ignore[attr-defined]
    wrapper.__name__ = getattr(function, "__name__", "wrapped")
    return wrapper


def _wrap_context_manager(timeline: Timeline, function: Callable[..., Any], label: str) -> Callable[..., Any]:
    """A context-manager factory whose enter and exit are booked under `label` (not its body)."""

    @contextlib.contextmanager
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        timeline.enter(label)
        manager = function(*args, **kwargs)
        try:
            value = manager.__enter__()
        finally:
            timeline.exit()
        try:
            yield value
        except BaseException:
            timeline.enter(label)
            try:
                if not manager.__exit__(*sys.exc_info()):
                    raise
            finally:
                timeline.exit()
        else:
            timeline.enter(label)
            try:
                manager.__exit__(None, None, None)
            finally:
                timeline.exit()

    return wrapper


_INSTALLED: list[tuple[Any, str, Any]] = []  # (owner, attribute, original) of every replacement


def _set(owner: Any, attribute: str, value: Any) -> None:
    _INSTALLED.append((owner, attribute, getattr(owner, attribute)))
    setattr(owner, attribute, value)


def uninstall() -> None:
    """Put every wrapped function back (latest replacement first)."""
    while _INSTALLED:
        owner, attribute, original = _INSTALLED.pop()
        setattr(owner, attribute, original)


def _replace_everywhere(original: Any, replacement: Any) -> int:
    """Rebind every project-module global that is `original` (modules import functions by name)."""
    replaced = 0
    prefixes = ("recdistill_dagster", "assets", "models", "resources", "bench")
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(prefixes):
            continue
        for attribute, value in list(vars(module).items()):
            if value is original:
                _set(module, attribute, replacement)
                replaced += 1
    return replaced


def _student_label(prefix: str) -> Labeller:
    def label(ctx: Any, student: Any, *rest: Any, **kwargs: Any) -> str:
        variant = rest[1] if len(rest) > 1 else kwargs.get("variant")
        return f"{prefix}: {student.name}" + (f" {variant}" if variant else "")

    return label


@contextlib.contextmanager
def installed(timeline: Timeline) -> Iterator[Timeline]:
    """The wrappers for the duration of a block (a case run in a test's process leaves nothing behind)."""
    install(timeline)
    try:
        yield timeline
    finally:
        uninstall()


def install(timeline: Timeline) -> None:
    """Wrap the pipeline's stage functions, the data source, recording and MLflow logging."""
    import mlflow.tracking

    import models.training as training
    import recdistill_dagster.data.schema as schema
    import recdistill_dagster.data.synthetic as synthetic
    import recdistill_dagster.report.site as site
    import recdistill_dagster.stages.dataset as dataset
    import recdistill_dagster.stages.evaluation as evaluation
    import recdistill_dagster.stages.samples as samples
    import recdistill_dagster.stages.student as student
    import recdistill_dagster.stages.teacher as teacher
    import resources.tracking as tracking

    def fixed(label: str) -> Labeller:
        return lambda *args, **kwargs: label

    def day_of(position: int) -> Callable[..., str | None]:
        return lambda *args, **kwargs: str(args[position]) if len(args) > position else None

    functions: list[tuple[Any, Labeller, Callable[..., str | None] | None]] = [
        (samples.materialize_sample_streams, fixed("sampling (streams, validation, parquet writes)"), None),
        (teacher.train_teacher_partition, fixed("teacher: checkpoint, registry, logit files"), None),
        (training.train_teacher, fixed("teacher training"), None),
        (training._logit_frame, fixed("recording (logit frames)"), None),
        (schema.validate_teacher_logits, fixed("recording (logit frames)"), None),
        (teacher._assess_health, fixed("health check"), None),
        (dataset.build_student_dataset, _student_label("join"), None),
        (student.train_student_partition, _student_label("student training"), None),
        (evaluation.evaluate_partition, lambda ctx, student, *rest, **kwargs: f"report: {student.name}", day_of(2)),
        (site.publish_report, lambda config, store, name, day: f"report: {name}", day_of(3)),
        (student.serving_example, fixed("MLflow logging"), None),
    ]
    for function, labeller, detail in functions:
        _replace_everywhere(function, _wrap(timeline, function, labeller, detail))
    _set(synthetic.SyntheticWorld, "impressions",
         _wrap(timeline, synthetic.SyntheticWorld.impressions, fixed("data generation"), None))
    _set(tracking.MlflowTracking, "start_run",
         _wrap_context_manager(timeline, tracking.MlflowTracking.start_run, "MLflow logging"))
    for method in ("log_params", "log_metrics", "log_step_history", "log_bytes", "log_json", "log_serving_model"):
        _set(tracking.TrackedRun, method,
             _wrap(timeline, getattr(tracking.TrackedRun, method), fixed("MLflow logging"), None))
    _set(mlflow.tracking.MlflowClient, "set_tag",
         _wrap(timeline, mlflow.tracking.MlflowClient.set_tag, fixed("MLflow logging"), None))
