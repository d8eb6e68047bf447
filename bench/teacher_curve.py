"""Teacher scaling curve: `python -m bench.teacher_curve [--sizes L,M,S,XS] [--volumes 80000,240000]`.

What a bigger teacher buys on the benchmark's world, and whether data volume changes it (issue 12,
item 6). Each (size, daily volume) trains one teacher through the `bench` calendar with the
pipeline's training function and schedule (`models.training.train_teacher` on the teacher's own
sampled stream: the batch phase's epochs, then one pass per streaming day, one optimizer carried
across days, the same initialization) and scores the model after day d on the unsampled day d+1
(progressive validation, debiased into click probabilities). One difference from the pipeline's
teacher step: the batch phase shuffles with the seed of its first day, not of its partition (the
last day), so a point's training noise is not the pipeline teacher's. No student is trained, so a
point costs one teacher; the transferability benchmark's `teacher` experiment measures sizes
through the asset graph with their distilled students.

AUC is within-day, averaged over report days (`mean_daily_auc`). Sizes trained on one volume score
the same rows, so their differences are paired: one Poisson row-weight vector per bootstrap draw for
every size (`models.metrics.bootstrap_aucs`). Volumes are different worlds' rows (more impressions
a day), so across volumes only the absolute AUCs and each volume's Bayes AUC are comparable.
Points already in the state folder are reused (a point is keyed by its resolved configuration).
"""

import argparse
import functools
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.experiments import DEFAULT_TEACHER_SIZE, SMALLER_TEACHERS
from bench.runner import digest, world_overrides
from models.metrics import World, auc, bootstrap_aucs
from recdistill_dagster.config import PipelineConfig, SyntheticWorldConfig, deep_merge, load_config

REPO = Path(__file__).resolve().parents[1]
PROFILE = "bench"
REFERENCE = "L"  # the profile's own teacher
SIZES: dict[str, dict[str, int]] = {
    REFERENCE: DEFAULT_TEACHER_SIZE,
    **SMALLER_TEACHERS,
}
DEFAULT_VOLUMES = (80_000, 240_000)
DEFAULT_WORLD = 0  # the benchmark's first world (the profile's own data seed; the `teacher` experiment's)
SCORE_BATCH = 2048


@dataclass(frozen=True)
class Point:
    size: str
    volume: int
    world: int
    profile: str = PROFILE
    batch_epochs: int | None = None  # the batch phase's epochs (None: the profile's)
    complementarity: float | None = None  # the world's category x category term (None: the profile's)
    teacher_seed: int | None = None  # another initialization and shuffle (None: the profile's)

    @property
    def name(self) -> str:
        """The size, and the batch phase's epochs when they are not the profile's: `L`, `L×4ep`."""
        return self.size if self.batch_epochs is None else f"{self.size}×{self.batch_epochs}ep"

    def overrides(self) -> dict[str, Any]:
        teacher: dict[str, Any] = {"arch": SIZES[self.size]}
        if self.batch_epochs is not None:
            teacher["optim"] = {"batch_phase_epochs": self.batch_epochs}
        if self.teacher_seed is not None:
            teacher["seed"] = self.teacher_seed
        data: dict[str, Any] = {"impressions_per_day": self.volume}
        if self.complementarity is not None:
            data["category_complementarity"] = self.complementarity
        return deep_merge(world_overrides(self.profile, self.world),
                          {"data": data, "teacher": teacher,
                           "students": [{"name": "prerank", "enabled": False}]})

    def config(self) -> PipelineConfig:
        return load_config(self.profile, overrides=self.overrides())

    def key(self) -> str:
        return digest(self.config().model_dump(mode="json"))


def train_point(point: Point, state: Path) -> Path:
    """Train one teacher through the calendar, scoring each report day; → its predictions parquet."""
    import torch

    from models.debias import calibrated_probability
    from models.inference import predict_logits
    from models.teacher import TeacherModel
    from models.training import make_optimizer, train_teacher
    from recdistill_dagster.data.sampling import sample_stream
    from recdistill_dagster.data.source import make_source

    out = state / f"{point.profile}-{point.name}-{point.volume}-w{point.world}-{point.key()}.parquet"
    if out.exists():
        return out
    torch.set_num_threads(1)
    config = point.config()
    teacher = config.teacher
    source = make_source(config)
    torch.manual_seed(teacher.seed)
    model = TeacherModel(source.vocab(), teacher.arch)
    optimizer = make_optimizer(model, teacher.optim)
    cpu = torch.device("cpu")
    calendar = config.calendar

    latest: dict[date, pl.DataFrame] = {}

    def impressions(day: date) -> pl.DataFrame:
        # A streaming day is scored (unsampled) and then trained on (sampled): generate it once.
        if day not in latest:
            latest.clear()
            latest[day] = source.impressions(day)
        return latest[day]

    def stream(day: date) -> pl.DataFrame:
        return sample_stream(impressions(day), config.sampling.teacher, seed=config.sampling.seed)

    def train(days: list[date], epochs: int, batch_size: int, step: int) -> int:
        stats, _ = train_teacher(model, optimizer, [(d, functools.partial(stream, d)) for d in days], epochs=epochs,
                                 batch_size=batch_size, record_epoch=teacher.record_epoch, snapshot_id=point.name,
                                 start_step=step, seed=teacher.seed + calendar.day_index(days[0]), device=cpu,
                                 grad_clip=teacher.optim.grad_clip, history_len=teacher.arch.seq_len, record=False)
        return step + stats.steps

    def score(day: date) -> pl.DataFrame:
        frame = impressions(day)
        logits = predict_logits(model, frame, history_len=teacher.arch.seq_len, batch_size=SCORE_BATCH,
                                device=cpu)["logit"]
        probability = calibrated_probability(logits, config.sampling.teacher, frame["traffic_source"].to_numpy())
        return frame.select("sample_id", "label", "p_true").with_columns(
            report_day=pl.lit(day), teacher=pl.Series(probability))

    started = time.monotonic()
    optim = teacher.optim
    batch_days = [calendar.start_date + timedelta(days=i) for i in range(calendar.batch_days)]
    step = train(batch_days, optim.batch_phase_epochs, optim.batch_phase_batch_size or optim.batch_size, 0)
    scored = []
    for day in calendar.training_days():
        if day != calendar.batch_end:
            step = train([day], optim.streaming_epochs, optim.batch_size, step)
        scored.append(score(day + timedelta(days=1)))
        print(f"  {point.name} {point.volume:,}/day: scored {day + timedelta(days=1)}", flush=True)
    frame = pl.concat(scored).with_columns(train_seconds=pl.lit(time.monotonic() - started),
                                           parameters=pl.lit(sum(p.numel() for p in model.parameters())))
    tmp = out.with_suffix(f".tmp-{os.getpid()}")
    frame.write_parquet(tmp)
    tmp.replace(out)
    return out


def _train(args: tuple[Point, Path]) -> Path:
    return train_point(*args)


def summarize(points: list[Point], files: dict[Point, Path], n_boot: int,
              reference: str = REFERENCE) -> dict[str, Any]:
    """Per volume: each size's AUC and its paired difference from the reference size, with intervals."""
    volumes = []
    for volume in sorted({p.volume for p in points}):
        members = [p for p in points if p.volume == volume]
        frames = {p.name: pl.read_parquet(files[p]) for p in members}
        first = next(iter(frames.values()))
        for size, frame in frames.items():
            if not frame["sample_id"].equals(first["sample_id"]):
                raise ValueError(f"size {size} at {volume}/day scored different rows")
        scores = {size: frame["teacher"].to_numpy() for size, frame in frames.items()}
        scores["bayes"] = first["p_true"].to_numpy()
        world = World(f"{volume}/day", first["label"].to_numpy().astype(np.float64),
                      first["report_day"].to_numpy(), [scores])
        boot = bootstrap_aucs([world], tuple(scores), n_boot=n_boot, seed=0)
        rows = []
        for p in sorted(members, key=lambda p: (int(frames[p.name]["parameters"][0]), p.name)):
            frame = frames[p.name]
            diff = boot.difference(p.name, reference) if reference in frames else None
            rows.append({"size": p.name, "arch": SIZES[p.size],
                         "batch_epochs": p.config().teacher.optim.batch_phase_epochs,
                         "parameters": int(frame["parameters"][0]), "auc": boot.point[p.name],
                         "auc_per_day": _per_day_aucs(frame),
                         "train_seconds": float(frame["train_seconds"][0]),
                         "vs_reference": None if diff is None or p.name == reference
                         else {"value": diff.point, "ci": list(diff.ci)}})
        volumes.append({"impressions_per_day": volume, "n_eval_rows": first.height,
                        "report_days": sorted({str(d) for d in first["report_day"]}),
                        "bayes_auc": boot.point["bayes"], "sizes": rows})
    return {"reference": reference, "auc_aggregation": "mean_daily_auc", "volumes": volumes}


def _per_day_aucs(frame: pl.DataFrame) -> list[float]:
    return [auc(day["teacher"].to_numpy(), day["label"].to_numpy())
            for _, day in frame.group_by("report_day", maintain_order=True)]


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Teacher scaling curve", "",
             f"Generated {results['generated_at']} by `{results['command']}`; world {results['world']} of the "
             f"`{results['profile']}` profile{_world_term(results)}; wall time {results['wall_seconds'] / 60:.1f} min.",
             "",
             "Each teacher is trained through the benchmark's calendar on its own sampled stream and scored after "
             "every training day on the next day's unsampled log; AUC within each report day, averaged over the "
             "days. Sizes on one volume score the same rows: Δ vs the reference teacher is paired (95% "
             "bootstrap interval, one row-weight vector per draw shared by every size).", ""]
    for volume in results["volumes"]:
        lines += [f"## {volume['impressions_per_day']:,} impressions a day ({volume['n_eval_rows']:,} evaluation "
                  f"rows; Bayes AUC {volume['bayes_auc']:.4f})", "",
                  f"| teacher | embed / width / tokens / depth | batch epochs | parameters | AUC | Δ vs "
                  f"{results['reference']} [95% CI] | AUC per report day | train min |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in volume["sizes"]:
            arch = row["arch"]
            paired = row["vs_reference"]
            delta = "reference" if paired is None else (
                f"{paired['value']:+.4f} [{paired['ci'][0]:+.4f}, {paired['ci'][1]:+.4f}]")
            per_day = " ".join(f"{a:.4f}" for a in row["auc_per_day"])
            lines.append(f"| {row['size']} | {arch['embed_dim']} / {arch['width']} / {arch['n_tokens']} / "
                         f"{arch['depth']} | {row['batch_epochs']} | {row['parameters']:,} | {row['auc']:.4f} | "
                         f"{delta} | {per_day} | {row['train_seconds'] / 60:.1f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _world_term(results: dict[str, Any]) -> str:
    scale = results.get("category_complementarity", 0.0)
    return f" with the category x category term at scale {scale:g}" if scale else ""


def _world(point: Point) -> SyntheticWorldConfig:
    """The synthetic world a point trains on (its seed and category x category term are in the results)."""
    data = point.config().data
    if not isinstance(data, SyntheticWorldConfig):
        raise SystemExit(f"profile {point.profile!r} must be a synthetic world")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"of {', '.join(SIZES)}")
    parser.add_argument("--volumes", default=",".join(str(v) for v in DEFAULT_VOLUMES),
                        help="impressions a day, comma-separated")
    parser.add_argument("--world", type=int, default=DEFAULT_WORLD)
    parser.add_argument("--profile", default=PROFILE, help="a synthetic-world profile (tests: tiny)")
    parser.add_argument("--batch-epochs", default="", help="extra points: the batch phase's epochs, comma-separated")
    parser.add_argument("--complementarity", type=float, default=None,
                        help="the world's category x category term (data.category_complementarity; 0: off; "
                             "default: the profile's)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--boot", type=int, default=300)
    parser.add_argument("--reference", default=REFERENCE, help="the size the others are paired against")
    parser.add_argument("--teacher-seed", type=int, default=None,
                        help="the teachers' seed (initialization, shuffles): another training of the same sizes")
    parser.add_argument("--state", default=str(REPO / ".state" / "teacher-curve"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--name", default="teacher_curve", help="results file name (without .md/.json)")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if args.reference not in sizes:
        unknown.append(f"reference {args.reference} (not among --sizes)")
    if unknown:
        raise SystemExit(f"unknown size(s) {', '.join(unknown)}; known: {', '.join(SIZES)}")
    epochs = [None, *(int(e) for e in args.batch_epochs.split(",") if e)]
    points = [Point(size, int(v), args.world, args.profile, e, args.complementarity, args.teacher_seed)
              for v in args.volumes.split(",") for size in sizes for e in epochs]
    world = _world(points[0])  # checked before any training
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # Longest first (bigger teachers, more data), so the pool's last job is a short one.
    ordered = sorted(points, key=lambda p: -p.volume * sum(SIZES[p.size].values()) * (p.batch_epochs or 2))
    with multiprocessing.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        paths = pool.map(_train, [(p, state) for p in ordered], chunksize=1)
    files = dict(zip(ordered, paths, strict=True))
    results = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
               "command": "python -m bench.teacher_curve " + " ".join(
                   f"--{k} {v}" for k, v in (("sizes", args.sizes), ("volumes", args.volumes), ("world", args.world),
                                              ("profile", args.profile), ("batch-epochs", args.batch_epochs),
                                              ("complementarity", "" if args.complementarity is None
                                               else f"{args.complementarity:g}"),
                                              ("reference", "" if args.reference == REFERENCE else args.reference),
                                              ("teacher-seed", "" if args.teacher_seed is None else args.teacher_seed),
                                              ("jobs", args.jobs)) if v != ""),
               "profile": args.profile, "world": world.seed,
               "category_complementarity": world.category_complementarity,
               "wall_seconds": time.monotonic() - started,
               **summarize(points, files, args.boot, reference=args.reference)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in ((f"{args.name}.json", json.dumps(results, indent=1)), (f"{args.name}.md", markdown(results))):
        tmp = out / f"{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
    print(markdown(results))


if __name__ == "__main__":
    main()
