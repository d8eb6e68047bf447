"""The benchmark's experiments (issues 4, 12), as cells: a name and config overrides on a profile.

Every cell runs the real asset graph (bench/runner.py) once per seed. Overrides are partial
configs deep-merged onto the profile, exactly as `--config FILE` would be. The defaults (config.py
+ the profile) are the recipe; a cell changes one thing. The headline (issue 12) is the `bench` profile's
ranker: a short-view student (the newest 20 events, no long-history counters) distilled on the teacher's
whole logged stream, with its oracle-teacher ceiling; cells of one experiment that share teacher, baseline
and rows are paired against its `reference` cell.

QUICK shrinks the calendar and the world's daily volume (the same generator and evaluation
protocol, fewer days and impressions) so that the main result and a few variants fit in minutes.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.runner import STUDENT
from recdistill_dagster.config import TeacherArch


@dataclass(frozen=True)
class Cell:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # what people read in the table; defaults to the name
    # Cells of one group are one variant at several settings (kind `matched`: each group's best cell is
    # compared with the reference group's best).
    group: str | None = None

    @property
    def title(self) -> str:
        return self.label or self.name


# Independent synthetic worlds are the units of every interval; an experiment runs on this many unless it says.
DEFAULT_WORLDS = 3


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    paper: str  # the paper's table or section it reproduces
    cells: tuple[Cell, ...]
    profile: str = "bench"
    # How the markdown renders it: eta | alpha | streaming | calibration | capacity | matched | teacher_sweep.
    kind: str = "eta"
    note: str = ""
    # The cell the others are paired with (Δη, Δ student gain), when they share its teacher, baseline
    # and rows; None: the first cell.
    reference: str | None = None
    # The oracle-teacher cell of the reference (same student, stream and loss): the transfer ceiling G*.
    oracle: str | None = None
    # Independent worlds it runs on at full size (fewer when its cells are many or train their own teachers).
    worlds: int = DEFAULT_WORLDS
    # In `make bench-eta` without ONLY (the default run is sized for 2 hours on 2 cores); the others run on
    # request (ONLY=…).
    in_default_run: bool = True


HEADLINE_EXPERIMENT = "main"
# The headline runs on more worlds than the paired experiments: its seed-level interval (t and Fieller over
# worlds) is read against a target, and over 3 worlds its t quantile has 2 degrees of freedom (4.30 vs 2.78
# over 5); the paired Δs of the other experiments are narrow on 3.
HEADLINE_WORLDS = 5
QUICK_WORLDS = DEFAULT_WORLDS  # QUICK caps every experiment here (its 10-minute budget)
DEFAULT_SEEDS = 1  # model seeds per world (they score the same rows, so they add training noise only)


def _student(**section: Any) -> dict[str, Any]:
    """Overrides of the measured student's entry (merged by name onto the profile's)."""
    return {"students": [{"name": STUDENT, **section}]}


def _distill(**values: Any) -> dict[str, Any]:
    return _student(distill=values)


def _student_arch(**values: Any) -> dict[str, Any]:
    return _student(arch=values)


DEFAULT = Cell("default", {}, "short-view student, transfer recipe (headline)")
ORACLE = Cell("oracle", _distill(source="oracle"), "same student distilled from the oracle teacher (ceiling G*)")
# The counter-fed student: the 256-event history through the parameter-free match counters, attention over
# the newest 20 (the previous default: the counters are close to the world's own sufficient statistics).
COUNTER_FED_ARCH = {"seq_len": 256, "attention_len": 20}
RECIPE_ALPHA = 100.0  # the bench profile's distill.alpha for the headline student
ALPHAS = (10.0, 30.0, 100.0, 300.0)

# Debias targets (models/debias.py) and the α grid each is run at: its optimum moves with its gradient scale.
DEBIAS_TARGETS = {
    "none": "no correction: σ(S1) vs σ(T1)",
    "teacher_own": "teacher's own f_T(T1)",
    "student_raw": "f_S(T1) vs f_S(S1) (paper)",
    "exact": "exact re-projection into the student's sampling space (ours)",
}
DEBIAS_ALPHAS = (30.0, RECIPE_ALPHA, 300.0, 1000.0)


# The teacher's parameter axis: the default architecture's sizes, and smaller teachers in which embedding
# width, mixer width and depth shrink together.
TEACHER_SIZE_KEYS = ("embed_dim", "width", "n_tokens", "depth")
DEFAULT_TEACHER_SIZE: dict[str, int] = {k: getattr(TeacherArch(), k) for k in TEACHER_SIZE_KEYS}
SMALLER_TEACHERS: dict[str, dict[str, int]] = {
    "M": {"embed_dim": 32, "width": 64, "n_tokens": 8, "depth": 2},
    "S": {"embed_dim": 16, "width": 32, "n_tokens": 4, "depth": 1},
    "XS": {"embed_dim": 8, "width": 16, "n_tokens": 4, "depth": 1},
}


def _size_label(arch: dict[str, int]) -> str:
    return f"embed {arch['embed_dim']}, width {arch['width']}, {arch['n_tokens']} tokens, depth {arch['depth']}"


def _debias_cell(target: str, alpha: float) -> Cell:
    """One (target, α) cell of the matched debias comparison; `exact` at the recipe's α is the headline cell."""
    label = f"{DEBIAS_TARGETS[target]}, α = {alpha:g}"
    if target == "exact":
        return (Cell("default", {}, label, group=target) if alpha == RECIPE_ALPHA
                else Cell(f"alpha_{alpha:g}", _distill(alpha=alpha), label, group=target))
    return Cell(f"target_{target}_alpha_{alpha:g}", _distill(teacher_target=target, alpha=alpha), label, group=target)


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        HEADLINE_EXPERIMENT,
        "Headline: a short-view student distilled from a 256-event teacher, with its transfer ceiling", "Table 1",
        (DEFAULT, ORACLE), reference="default", oracle="oracle", worlds=HEADLINE_WORLDS,
        note=("The student embeds and attends over the newest 20 events and has no long-history counters; the "
              "teacher keeps its 256-event sequence and every negative. Recipe: soft labels on the teacher's "
              "whole logged stream, α = 100, student lr 8e-3 (profile `bench`)."),
    ),
    Experiment(
        "counter_fed", "Second row: the counter-fed student (256-event history through match counters)", "Table 1",
        (
            Cell("counter_fed", _student_arch(**COUNTER_FED_ARCH), "counter-fed student, transfer recipe"),
            Cell("counter_fed_oracle", _student(arch=COUNTER_FED_ARCH, distill={"source": "oracle"}),
                 "counter-fed student distilled from the oracle (its ceiling G*)"),
        ),
        reference="counter_fed",
    ),
    Experiment(
        "recipe", "What carries the gap: each part of the transfer recipe removed, paired with the headline", "§4.3",
        (
            DEFAULT,
            Cell("own_rows", _distill(soft_label_rows="student_stream"),
                 "soft labels on the student's own rows only (not the teacher's whole stream)"),
            Cell("alpha_3", _distill(alpha=3.0), "α = 3 (the pipeline's default)"),
            Cell("previous_recipe", _distill(soft_label_rows="student_stream", alpha=3.0),
                 "previous recipe: own rows, α = 3"),
        ),
        reference="default",
    ),
    Experiment(
        "alpha", "α sweep of the headline recipe, with the measured loss magnitudes", "§4.3.2",
        tuple(Cell("default", {}, f"α = {a:g} (recipe)") if a == RECIPE_ALPHA
              else Cell(f"alpha_{a:g}", _distill(alpha=a), f"α = {a:g}") for a in ALPHAS),
        kind="alpha", reference="default",
    ),
    Experiment(
        "towers", "Tower and loss variants (the served tower is always the main tower)", "Table 5",
        (
            Cell("single_distill", _student_arch(towers="single_distill"), "single tower, L_distill only"),
            Cell("single_mixed", _student_arch(towers="single_mixed"), "single tower, L_task + α·L_distill"),
            Cell("decoupled_distill", _student_arch(towers="decoupled_distill"),
                 "decoupled, aux on α·L_distill"),
            Cell("default", {}, "decoupled, aux on L_task + α·L_distill (paper default)"),
        ),
        reference="default",
        in_default_run=False,
    ),
    Experiment(
        "debias", "Debias variants of the distillation target, each at its own best α", "Table 9",
        tuple(_debias_cell(target, alpha) for target in DEBIAS_TARGETS for alpha in DEBIAS_ALPHAS),
        kind="matched", reference="default", worlds=1,
        note=("With the paper's f on both sides, `teacher_own` has the same optimum as `exact` and `student_raw` "
              "the same as `none`; they differ in gradient scale (the sigmoid is flatter in calibrated space), "
              "so every target runs at each α of the grid and is compared with `exact` at the α best for each: "
              "the paired Δ at matched α is what the target's bias costs. The best α is chosen on the same "
              "evaluation rows it is scored on (each target gets the same advantage). One world: 16 cells, "
              "13 of them student-only cells of their own."),
    ),
    Experiment(
        "streaming", "Streaming: distillation in both phases, batch only, streaming only", "Table 8, Figure 5",
        (
            DEFAULT,
            Cell("batch_only", _distill(in_streaming=False), "batch phase only (streaming without distillation)"),
            Cell("streaming_only", _distill(in_batch_phase=False), "streaming only (no distillation in batch)"),
        ),
        kind="streaming", reference="default",
        in_default_run=False,
    ),
    Experiment(
        "record_epoch", "Which epoch's forward pass the teacher records in a 2-epoch batch phase", "§3 (contract)",
        (
            Cell("teacher_2_epochs_first", {"teacher": {"optim": {"batch_phase_epochs": 2}, "record_epoch": "first"}},
                 "2 batch epochs, records the first (rows not yet trained on)"),
            Cell("teacher_2_epochs_last", {"teacher": {"optim": {"batch_phase_epochs": 2}, "record_epoch": "last"}},
                 "2 batch epochs, records the last (logits echo fitted labels; the run logs a warning)"),
        ),
        worlds=1,
    ),
    Experiment(
        "capacity", "Student capacity at a fixed teacher (short view, transfer recipe)", "Tables 2, 4",
        (
            Cell("student_small", _student_arch(embed_dim=6, backbone_hidden=[64, 32]), "small: embed 6, [64, 32]"),
            Cell("default", {}, "default: embed 12, [256, 128]"),
            Cell("student_large", _student_arch(embed_dim=24, backbone_hidden=[512, 256]),
                 "large: embed 24, [512, 256]"),
        ),
        kind="capacity",
        in_default_run=False,
    ),
    Experiment(
        "movielens", "Headline recipe on MovieLens 100K (real data, one world)", "Table 1", (DEFAULT,),
        profile="movielens",
        in_default_run=False,
    ),
    Experiment(
        "teacher", "Teacher scaling axes: parameters (four sizes), sequence length, data volume", "Tables 6, 7",
        (
            Cell("default", {}, f"default teacher ({_size_label(DEFAULT_TEACHER_SIZE)})"),
            *(Cell(f"teacher_{size}", {"teacher": {"arch": arch}}, f"smaller teacher {size} ({_size_label(arch)})")
              for size, arch in SMALLER_TEACHERS.items()),
            Cell("teacher_short_sequence", {"teacher": {"arch": {"seq_len": 20}}},
                 "− sequence length (20 events, the student's window)"),
            Cell("teacher_less_data",
                 {"sampling": {"teacher": {"negative_keep": 0.1}}},
                 "− data volume (the student's 10% of negatives)"),
        ),
        kind="teacher_sweep",
        note=("Every cell distils the headline student from its own teacher; the raw student, the streams and the "
              "evaluation rows are shared, so teachers are compared pairwise on the same rows"),
        worlds=1,
        in_default_run=False,
    ),
)

BY_NAME = {e.name: e for e in EXPERIMENTS}

# QUICK: the same world generator and evaluation protocol, a shorter calendar and fewer impressions.
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "bench": {"data": {"impressions_per_day": 30000}, "calendar": {"batch_days": 4, "streaming_days": 2},
              "eval": {"bootstrap_samples": 100}},
    "movielens": {"eval": {"bootstrap_samples": 100}},
}
# The headline with its ceiling and the counter-fed row (record_epoch trains two teachers: full run only).
QUICK_EXPERIMENTS = (HEADLINE_EXPERIMENT, "counter_fed")
# Cells left out of QUICK (their experiment keeps the others).
QUICK_SKIPPED_CELLS = ("counter_fed_oracle",)


def selected(only: list[str] | None, quick: bool) -> list[Experiment]:
    names = only or (list(QUICK_EXPERIMENTS) if quick else [e.name for e in EXPERIMENTS if e.in_default_run])
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown experiment(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    experiments = [BY_NAME[n] for n in names]
    if quick:
        experiments = [_quick(e) for e in experiments]
    return experiments


def profile_overrides(experiment: Experiment, quick: bool) -> dict[str, Any]:
    """What QUICK changes in the experiment's profile (nothing at full size)."""
    return QUICK_OVERRIDES.get(experiment.profile, {}) if quick else {}


def protocol_of(experiment: Experiment, quick: bool) -> dict[str, str]:
    """What an experiment's results were measured on: its profile, resolved with the QUICK overrides when QUICK.

    Results of an earlier invocation are kept beside new ones only under the same protocol: a changed world,
    calendar or recipe in the profile makes them another benchmark's numbers.
    """
    from bench.runner import digest
    from recdistill_dagster.config import load_config

    resolved = load_config(experiment.profile, overrides=profile_overrides(experiment, quick)).model_dump(mode="json")
    return {"profile": experiment.profile, "digest": digest([experiment.profile, resolved])}


def _quick(experiment: Experiment) -> Experiment:
    cells = tuple(c for c in experiment.cells if c.name not in QUICK_SKIPPED_CELLS)
    return dataclasses.replace(experiment, cells=cells, worlds=min(experiment.worlds, QUICK_WORLDS))
