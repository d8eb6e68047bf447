"""The benchmark's experiments (issue 4), as cells: a name and config overrides on a profile.

Every cell runs the real asset graph (bench/runner.py) once per seed. Overrides are partial
configs deep-merged onto the profile, exactly as `--config FILE` would be. The defaults (config.py
+ the profile) are the recipe; a cell changes one thing.

QUICK shrinks the calendar and the world's daily volume (the same generator and evaluation
protocol, fewer days and impressions) so that the main result and a few variants fit in minutes.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.runner import STUDENT


@dataclass(frozen=True)
class Cell:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # what people read in the table; defaults to the name

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    paper: str  # the paper's table or section it reproduces
    cells: tuple[Cell, ...]
    profile: str = "bench"
    kind: str = "eta"  # how the markdown renders it: eta | alpha | streaming | calibration | capacity
    note: str = ""
    # The cell the others are paired with (Δη, Δ student gain), when they share its teacher, baseline
    # and rows; None: the first cell.
    reference: str | None = None
    # The oracle-teacher cell of the reference (same student, stream and loss): the transfer ceiling G*.
    oracle: str | None = None
    max_worlds: int | None = None  # fewer worlds than the benchmark's (cells that train their own teacher)


HEADLINE_EXPERIMENT = "main"
DEFAULT_WORLDS = 3  # independent synthetic worlds: the units of every interval
DEFAULT_SEEDS = 1  # model seeds per world (they score the same rows, so they add training noise only)


def _student(**section: Any) -> dict[str, Any]:
    """Overrides of the measured student's entry (merged by name onto the profile's)."""
    return {"students": [{"name": STUDENT, **section}]}


def _distill(**values: Any) -> dict[str, Any]:
    return _student(distill=values)


def _student_arch(**values: Any) -> dict[str, Any]:
    return _student(arch=values)


DEFAULT = Cell("default", {}, "default recipe")

EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "main", "Main result: default teacher vs default student, Bayes limit as the ceiling", "Table 1",
        (DEFAULT,),
    ),
    Experiment(
        "towers", "Tower and loss variants (the served tower is always the main tower)", "Table 5",
        (
            Cell("single_distill", _student_arch(towers="single_distill"), "single tower, L_distill only"),
            Cell("single_mixed", _student_arch(towers="single_mixed"), "single tower, L_task + α·L_distill"),
            Cell("decoupled_distill", _student_arch(towers="decoupled_distill"),
                 "decoupled, aux on α·L_distill"),
            Cell("decoupled_mixed", _student_arch(towers="decoupled_mixed"),
                 "decoupled, aux on L_task + α·L_distill (paper default)"),
        ),
    ),
    Experiment(
        "alpha", "α sweep with the measured loss magnitudes", "§4.3.2",
        tuple(Cell(f"alpha_{a:g}", _distill(alpha=a), f"α = {a:g}") for a in (0.1, 0.3, 1.0, 3.0, 10.0)),
        kind="alpha",
    ),
    Experiment(
        "debias", "Debias variants of the distillation target", "Table 9",
        (
            Cell("target_none", _distill(teacher_target="none"), "no correction: σ(S1) vs σ(T1)"),
            Cell("target_teacher_own", _distill(teacher_target="teacher_own"), "teacher's own f_T(T1)"),
            Cell("target_student_raw", _distill(teacher_target="student_raw"), "f_S(T1) vs f_S(S1) (paper)"),
            Cell("target_exact", _distill(teacher_target="exact"),
                 "exact re-projection into the student's sampling space (ours)"),
        ),
        kind="calibration",
    ),
    Experiment(
        "streaming", "Streaming: distillation in both phases, batch only, streaming only", "Table 8, Figure 5",
        (
            DEFAULT,
            Cell("batch_only", _distill(in_streaming=False), "batch phase only (streaming without distillation)"),
            Cell("streaming_only", _distill(in_batch_phase=False), "streaming only (no distillation in batch)"),
        ),
        kind="streaming",
    ),
    Experiment(
        "history_view", "Where the teacher's edge comes from: the student's view of the 256-event history",
        "§1 (information cap)",
        (
            DEFAULT,
            Cell("short_view", _student_arch(seq_len=20, attention_len=None),
                 "20 newest events only (no long-history counters)"),
        ),
        note=("A student can at best learn E[teacher | its own inputs]; with the short view the teacher's "
              "edge is mostly information the student never sees."),
    ),
    Experiment(
        "capacity", "Student capacity at a fixed teacher; depth vs width at equal parameters", "Tables 2, 4",
        (
            Cell("student_small", _student_arch(embed_dim=6, backbone_hidden=[64, 32]), "small: embed 6, [64, 32]"),
            Cell("default", {}, "default: embed 12, [256, 128]"),
            Cell("student_large", _student_arch(embed_dim=24, backbone_hidden=[512, 256]),
                 "large: embed 24, [512, 256]"),
            Cell("student_wide", _student_arch(backbone_hidden=[400]), "wide: embed 12, [400] (74.6k dense)"),
            Cell("student_deep", _student_arch(backbone_hidden=[150, 150, 150]),
                 "deep: embed 12, [150, 150, 150] (73.6k dense)"),
        ),
        kind="capacity",
    ),
    Experiment(
        "movielens", "Main result on MovieLens 100K (real data)", "Table 1", (DEFAULT,), profile="movielens",
    ),
    Experiment(
        "teacher", "Teacher scaling axes, one removed at a time from the default teacher", "Tables 6, 7",
        (
            DEFAULT,
            Cell("teacher_less_params",
                 {"teacher": {"arch": {"embed_dim": 16, "width": 32, "n_tokens": 4, "depth": 1}}},
                 "− dense/embedding parameters (embed 16, width 32, depth 1)"),
            Cell("teacher_short_sequence", {"teacher": {"arch": {"seq_len": 20}}},
                 "− sequence length (20 events, the student's attention window)"),
            Cell("teacher_less_data",
                 {"sampling": {"teacher": {"negative_keep": 0.1}}},
                 "− data volume (the student's 10% of negatives)"),
        ),
    ),
)

BY_NAME = {e.name: e for e in EXPERIMENTS}

# QUICK: the same world generator and evaluation protocol, a shorter calendar and fewer impressions.
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "bench": {"data": {"impressions_per_day": 30000}, "calendar": {"batch_days": 4, "streaming_days": 2},
              "eval": {"bootstrap_samples": 100}},
    "movielens": {"eval": {"bootstrap_samples": 100}},
}
QUICK_EXPERIMENTS = ("main", "towers", "alpha")
QUICK_ALPHAS = (0.1, 1.0, 3.0, 10.0)


def selected(only: list[str] | None, quick: bool) -> list[Experiment]:
    names = only or (list(QUICK_EXPERIMENTS) if quick else [e.name for e in EXPERIMENTS])
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown experiment(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    experiments = [BY_NAME[n] for n in names]
    if quick:
        experiments = [_quick(e) for e in experiments]
    return experiments


def _quick(experiment: Experiment) -> Experiment:
    if experiment.name != "alpha":
        return experiment
    cells = tuple(c for c in experiment.cells if float(c.name.split("_", 1)[1]) in QUICK_ALPHAS)
    return dataclasses.replace(experiment, cells=cells)
