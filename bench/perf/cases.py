"""The benchmark's cases. Each runs in its own subprocess (`python -m bench.perf.case NAME ...`), so
its peak memory is its own; comparisons inside a case alternate their two sides (A B, B A, …).

Memory: `peak_rss_mb` is the process's ru_maxrss; `work_peak_rss_mb` is the peak of the measured
section alone (the kernel's high-water mark is reset just before it: /proc/self/clear_refs "5"),
`baseline_rss_mb` what the process held when the section started (interpreter, imported libraries).
"""

import contextlib
import io
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from bench.perf.measure import current_rss_mb, peak_rss_mb, reset_high_water_mark


@contextlib.contextmanager
def section(out: dict[str, Any]) -> Iterator[None]:
    """Time a section and record its own peak RSS (high-water mark reset at its start)."""
    reset_high_water_mark()
    out["baseline_rss_mb"] = current_rss_mb()
    started = time.perf_counter()
    yield
    out["seconds"] = time.perf_counter() - started
    out["work_peak_rss_mb"] = peak_rss_mb()
    out["peak_rss_mb"] = peak_rss_mb()


def _alternating(repeats: int) -> Iterator[tuple[int, bool]]:
    """(repetition, A first?): A B, B A, A B, … so drift hits both sides alike."""
    for rep in range(repeats):
        yield rep, rep % 2 == 0


# --------------------------------------------------------------------------- shared set-up


def _config(params: dict[str, Any], rows: int | None = None) -> Any:
    """The profile's models (demo unless the params say otherwise) with one batch day and one streaming
    day, on CPU with the given torch threads; with `rows`, enough impressions a day for `rows` rows of the
    sparsest stream (prerank keeps about 6% of a day's impressions)."""
    from recdistill_dagster.config import load_config

    profile = params.get("profile", "demo")
    overrides: dict[str, Any] = {"runtime": {"threads": params["threads"], "device": "cpu"},
                                 "calendar": {"batch_days": 1, "streaming_days": 1}}
    if rows:
        base = load_config(profile).data
        impressions = max(getattr(base, "impressions_per_day", 0), 20 * rows)
        overrides["data"] = {"impressions_per_day": impressions}
    return load_config(profile, overrides=overrides)


def _set_threads(threads: int) -> None:
    from models.device import configure_threads

    configure_threads(threads)


def _write_day(workdir: Path, config: Any, rows: int) -> dict[str, Any]:
    """One streaming day of the demo world: the teacher's and each student's stream (the first `rows` of
    each), and each student's joined dataset (its rows ⟕ logits of every teacher row), written with the
    store as the stages write them. The day has enough impressions for `rows` rows of the sparsest stream."""
    import numpy as np
    import polars as pl

    from recdistill_dagster import layout
    from recdistill_dagster.data.join import join_student_dataset
    from recdistill_dagster.data.sampling import sample_stream
    from recdistill_dagster.data.schema import TEACHER_LOGIT_SCHEMA
    from recdistill_dagster.data.source import make_source
    from recdistill_dagster.storage import ArtifactStore

    store = ArtifactStore(str(workdir))
    source = make_source(config)
    day = config.calendar.training_days()[1]
    impressions = source.impressions(day)
    teacher = sample_stream(impressions, config.sampling.teacher, seed=config.sampling.seed)
    store.write_parquet(layout.samples_path("teacher", day), teacher.head(rows))
    rng = np.random.default_rng(0)
    logits = teacher.select(
        "sample_id", "day",
        teacher_logit=pl.Series(rng.normal(-2.0, 1.0, teacher.height)),
        teacher_snapshot=pl.lit("teacher@perf"), recorded_step=pl.lit(0),
        teacher_r_s=pl.col("r_s"), teacher_r_pos=pl.col("r_pos"), teacher_p_x=pl.col("p_x"),
        teacher_b_s=pl.col("b_s"),
    ).select(pl.col(name).cast(dtype) for name, dtype in TEACHER_LOGIT_SCHEMA.items())
    kept = {}
    for student in config.active_students:
        rows_of = sample_stream(impressions, student.sampling, seed=config.sampling.seed).head(rows)
        store.write_parquet(layout.student_samples_path(student.name, day), rows_of)
        dataset = join_student_dataset(rows_of.lazy(), logits.lazy()).collect()
        store.write_parquet(layout.student_dataset_path(student.name, day, day), dataset)
        kept[student.name] = dataset.height
    return {"store": store, "day": day, "vocab": source.vocab(), "teacher_rows": min(rows, teacher.height),
            "student_rows": kept}


def _loader(store: Any, path: str, table: str, day: date) -> Callable[[], Any]:
    from recdistill_dagster.stages.inputs import load_samples

    return lambda: load_samples(store, path, table, day)


# --------------------------------------------------------------------------- 1. recording overhead


def recording(params: dict[str, Any]) -> dict[str, Any]:
    """Teacher training throughput with logit recording on vs off: same day, same seed, alternating."""
    import torch

    from models.teacher import TeacherModel
    from models.training import make_optimizer, train_teacher
    from recdistill_dagster import layout

    threads = params["threads"]
    _set_threads(threads)
    config = _config(params, params["rows"])
    setup = _write_day(Path(params["workdir"]), config, params["rows"])
    day, store = setup["day"], setup["store"]
    load = _loader(store, layout.samples_path("teacher", day), "teacher_samples", day)
    arch, optim = config.teacher.arch, config.teacher.optim
    samples_per_s: dict[str, list[float]] = {"on": [], "off": []}

    def once(record: bool) -> None:
        torch.manual_seed(config.teacher.seed)
        model = TeacherModel(setup["vocab"], arch)
        optimizer = make_optimizer(model, optim)
        stats, logits = train_teacher(
            model, optimizer, [(day, load)], epochs=1, batch_size=optim.batch_size, record_epoch="first",
            snapshot_id="teacher@perf", start_step=0, seed=config.teacher.seed, device=torch.device("cpu"),
            grad_clip=optim.grad_clip, history_len=arch.seq_len, log_every=config.runtime.log_every_steps,
            record=record)
        assert bool(logits) == record
        samples_per_s["on" if record else "off"].append(stats.samples_per_second)

    once(True)  # warm-up (first-touch allocations, lazy imports), not counted
    samples_per_s["on"].clear()
    for _, on_first in _alternating(params["repeats"]):
        for record in ((True, False) if on_first else (False, True)):
            once(record)
    return {"rows": setup["teacher_rows"], "batch_size": optim.batch_size, "samples_per_s": samples_per_s,
            "peak_rss_mb": peak_rss_mb()}


# --------------------------------------------------------------------------- 3. training loops


def _bare_loop(model: Any, optimizer: Any, tensors: Any, batch_size: int, seed: int, grad_clip: float | None,
               loss_of: Callable[[Any, Any], Any]) -> float:
    """The bound: the same model, optimizer, batches and loss over tensors already in memory."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for idx in torch.randperm(len(tensors), generator=generator).split(batch_size):
        batch = tensors.slice(idx)
        loss = loss_of(model(batch.sparse, batch.dense, batch.history), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return len(tensors) / (time.perf_counter() - started)


@dataclass
class _LoopSpec:
    """One model's training loop as its stage runs it, and the bare bound's loss."""

    arch: Any
    optim: Any
    seed: int
    path: str
    table: str
    build: Callable[[], Any]
    pipeline: Callable[[Any, Any, Callable[[], Any]], float]  # (model, optimizer, load) → samples/s
    loss_of: Callable[[Any, Any], Any]  # (output, batch) → loss


def _loop_spec(config: Any, name: str, vocab: Any, day: date) -> _LoopSpec:
    import torch

    from models.losses import student_losses, task_loss
    from models.student import StudentModel
    from models.teacher import TeacherModel
    from models.training import train_student, train_teacher
    from recdistill_dagster import layout

    cpu = torch.device("cpu")
    log_every = config.runtime.log_every_steps
    if name == "teacher":
        arch, optim, seed = config.teacher.arch, config.teacher.optim, config.teacher.seed

        def teacher_loop(model: Any, optimizer: Any, load: Callable[[], Any]) -> float:
            stats, _ = train_teacher(
                model, optimizer, [(day, load)], epochs=1, batch_size=optim.batch_size, record_epoch="first",
                snapshot_id="teacher@perf", start_step=0, seed=seed, device=cpu, grad_clip=optim.grad_clip,
                history_len=arch.seq_len, log_every=log_every)
            return stats.samples_per_second

        return _LoopSpec(arch, optim, seed, layout.samples_path("teacher", day), "teacher_samples",
                         lambda: TeacherModel(vocab, arch), teacher_loop,
                         lambda output, batch: task_loss(output, batch.label))
    student = config.student(name)
    arch, optim, seed = student.arch, student.optim, student.seed

    def student_loop(model: Any, optimizer: Any, load: Callable[[], Any]) -> float:
        stats = train_student(
            model, optimizer, [(day, load)], epochs=1, batch_size=optim.batch_size, distill=student.distill,
            towers=arch.towers, start_step=0, seed=seed, device=cpu, grad_clip=optim.grad_clip,
            history_len=arch.seq_len, log_every=log_every)
        return stats.samples_per_second

    def student_loss(output: Any, batch: Any) -> Any:
        return student_losses(output, batch.label, batch.teacher_logit, batch.sampling, batch.teacher_sampling,
                              towers=arch.towers, distill=student.distill).total

    return _LoopSpec(arch, optim, seed, layout.student_dataset_path(name, day, day), f"{name}/student_dataset",
                     lambda: StudentModel(vocab, arch), student_loop, student_loss)


def train(params: dict[str, Any]) -> dict[str, Any]:
    """Each model's pipeline training loop (parquet → validation → Arrow → tensors → steps, as the stage
    calls it) against a bare loop over the same rows already in memory, alternating."""
    import torch

    from models.features import frame_to_tensors
    from models.training import make_optimizer

    _set_threads(params["threads"])
    config = _config(params, params["rows"])
    setup = _write_day(Path(params["workdir"]), config, params["rows"])
    day, store = setup["day"], setup["store"]
    results: dict[str, Any] = {}
    for name in params.get("models") or ["teacher", *(s.name for s in config.active_students)]:
        spec = _loop_spec(config, name, setup["vocab"], day)
        load = _loader(store, spec.path, spec.table, day)
        tensors = frame_to_tensors(load(), spec.arch.seq_len, compact_history=True)
        sides: dict[str, list[float]] = {"pipeline": [], "bare": []}

        def once(side: str, spec: _LoopSpec = spec, load: Callable[[], Any] = load, tensors: Any = tensors) -> float:
            torch.manual_seed(spec.seed)
            model = spec.build()
            optimizer = make_optimizer(model, spec.optim)
            model.train()
            if side == "pipeline":
                return spec.pipeline(model, optimizer, load)
            return _bare_loop(model, optimizer, tensors, spec.optim.batch_size, spec.seed, spec.optim.grad_clip,
                              spec.loss_of)

        once("bare")  # warm-up, not counted
        for _, pipeline_first in _alternating(params["repeats"]):
            for side in (("pipeline", "bare") if pipeline_first else ("bare", "pipeline")):
                sides[side].append(once(side))
        results[name] = {"rows": len(tensors), "batch_size": spec.optim.batch_size, "samples_per_s": sides,
                         "parameters": sum(p.numel() for p in spec.build().parameters())}
    return {"models": results, "peak_rss_mb": peak_rss_mb()}


# --------------------------------------------------------------------------- 2. join


def join(params: dict[str, Any]) -> dict[str, Any]:
    """One operation of the join case: generate the inputs, run the stage (polars) or the pandas baseline,
    or time the parts of the stage's work (read, read + write without a join)."""
    import recdistill_dagster.stages.dataset  # noqa: F401  (same imports, same baseline memory, both engines)
    from bench.perf import joinbench

    base, op = Path(params["base"]), params["op"]
    day = joinbench.join_day(_config(params).calendar.start_date)
    out: dict[str, Any] = {"op": op, "rows": params["rows"]}
    if op == "generate":
        with section(out):
            out.update(joinbench.write_inputs(base, day, params["rows"], params["history_len"],
                                              params["logit_factor"]))
        return out
    with section(out):
        if op == "polars":
            out.update(joinbench.polars_join(base, day, params["threads"]))
        elif op == "pandas":
            out.update(joinbench.pandas_join(base, day))
        else:
            out.update(joinbench.stage_parts(base, day))
    Path(out.get("output", base / "none")).unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------- 4./5./6. pipeline days


def orchestration(params: dict[str, Any]) -> dict[str, Any]:
    """One streaming day through Dagster (every asset) vs the same stage functions from a plain script,
    alternating; each side's time split by stage (the same wrappers on both sides)."""
    from bench.perf.pipeline import PerfPipeline, streaming_day_overrides
    from bench.perf.timeline import Timeline, installed

    threads = params["threads"]
    home = Path(params["home"])
    shutil.rmtree(home, ignore_errors=True)
    pipeline = PerfPipeline(home, params["profile"], streaming_day_overrides(params["impressions"], threads), threads)
    with installed(Timeline()) as timeline:
        return _alternate_days(pipeline, timeline, params)


def _alternate_days(pipeline: Any, timeline: Any, params: dict[str, Any]) -> dict[str, Any]:
    setup: dict[str, Any] = {}
    with section(setup):
        pipeline.setup()
    day = pipeline.streaming_day
    sides: dict[str, list[float]] = {"dagster": [], "script": []}
    stages: dict[str, list[dict[str, float]]] = {"dagster": [], "script": []}
    for _, dagster_first in _alternating(params["repeats"]):
        for side in (("dagster", "script") if dagster_first else ("script", "dagster")):
            timeline.reset()
            started = time.perf_counter()
            (pipeline.dagster_day if side == "dagster" else pipeline.script_day)(day)
            sides[side].append(time.perf_counter() - started)
            stages[side].append(timeline.snapshot())
    rows = _stream_rows(pipeline, day)
    return {"impressions": params["impressions"], "rows": rows, "seconds": sides, "stages": stages,
            "setup_seconds": setup["seconds"], "peak_rss_mb": peak_rss_mb()}


def _stream_rows(pipeline: Any, day: date) -> dict[str, int]:
    import polars as pl

    from recdistill_dagster.stages.samples import stream_path

    streams = ["eval", "teacher", *(s.name for s in pipeline.config.active_students)]
    return {s: int(pipeline.store.scan_parquet(stream_path(s, day)).select(pl.len()).collect().item())
            for s in streams}


def scaling(params: dict[str, Any]) -> dict[str, Any]:
    """One streaming day through Dagster at one size: wall time and the day's own peak memory."""
    from bench.perf.pipeline import PerfPipeline, streaming_day_overrides
    from bench.perf.timeline import Timeline, installed

    threads = params["threads"]
    home = Path(params["home"])
    shutil.rmtree(home, ignore_errors=True)
    pipeline = PerfPipeline(home, params["profile"], streaming_day_overrides(params["impressions"], threads), threads)
    pipeline.setup()
    out: dict[str, Any] = {"impressions": params["impressions"]}
    day = pipeline.streaming_day
    # Each stage's own peak memory: what bounds the day's (the wrappers reset the high-water mark at every
    # stage boundary, so the day's own peak is the largest reading they saw).
    with installed(Timeline(memory=True)) as timeline, section(out):
        pipeline.dagster_day(day)
    out["work_peak_rss_mb"] = max(timeline.peak_mb, out["work_peak_rss_mb"])
    out["stage_peaks_mb"] = dict(timeline.peaks_mb)
    out["stage_seconds"] = timeline.snapshot()
    out["rows"] = _stream_rows(pipeline, day)
    shutil.rmtree(home, ignore_errors=True)
    return out


def make_run(params: dict[str, Any]) -> dict[str, Any]:
    """`make run` (the CLI's `run`: every data day, then every training partition through Dagster) in a
    fresh state folder, its time split by stage."""
    from bench.perf.pipeline import point_environment_at, write_overrides
    from bench.perf.timeline import Timeline, installed
    from recdistill_dagster.cli import run_pipeline

    threads, profile = params["threads"], params["profile"]
    home = Path(params["home"])
    shutil.rmtree(home, ignore_errors=True)
    point_environment_at(home, profile)
    config_file = write_overrides(home, params.get("overrides") or {}, threads)
    import recdistill_dagster.definitions  # noqa: F401  (import the graph first: the wrappers rebind its names)

    out: dict[str, Any] = {"profile": profile}
    with installed(Timeline()) as timeline, contextlib.redirect_stdout(io.StringIO()) as printed, section(out):
        status = run_pipeline(profile, str(config_file))
    if status != 0:
        raise RuntimeError(f"run_pipeline exited {status}: {printed.getvalue()[-2000:]}")
    out["stages"] = timeline.snapshot()
    out["report_calls"] = timeline.events
    shutil.rmtree(home, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- 7. serving


def serving(params: dict[str, Any]) -> dict[str, Any]:
    """The served student main tower vs the teacher per prediction, batch 1 and 512, alternating;
    PyTorch eager and, where onnxruntime is installed, the ONNX exports."""
    import importlib.util
    import statistics

    import numpy as np
    import torch

    from models.export import export_onnx, onnx_predict, onnx_session, torch_predict
    from models.student import StudentModel
    from models.teacher import TeacherModel
    from recdistill_dagster.data.schema import DENSE_FEATURES, SPARSE_FEATURES
    from recdistill_dagster.data.source import make_source

    threads = params["threads"]
    _set_threads(threads)
    config = _config(params)
    vocab = make_source(config).vocab()
    torch.manual_seed(0)
    modules: dict[str, Any] = {"teacher": TeacherModel(vocab, config.teacher.arch).eval()}
    lengths = {"teacher": config.teacher.arch.seq_len}
    for student in config.active_students:
        modules[student.name] = StudentModel(vocab, student.arch).serving_module(student.sampling).eval()
        lengths[student.name] = student.arch.seq_len
    rng = np.random.default_rng(0)
    n = 512
    sparse = np.stack([rng.integers(0, vocab.size_of(f), n) for f in SPARSE_FEATURES], axis=1).astype(np.int64)
    dense = rng.random((n, len(DENSE_FEATURES))).astype(np.float32)
    length = max(lengths.values())
    history = rng.integers(1, vocab.n_items, (n, length)).astype(np.int64)
    history[:, : length // 4] = 0  # some padding, as short histories have
    inputs = {who: (sparse, dense, history[:, -lengths[who]:]) for who in modules}
    runtimes: dict[str, Callable[[str, tuple[Any, ...]], Any]] = {
        "torch": lambda who, x: torch_predict(modules[who], x)}
    if params.get("onnx", True) and importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        workdir = Path(params["workdir"])
        sessions = {who: onnx_session(export_onnx(modules[who], tuple(a[:2] for a in inputs[who]),  # type: ignore[arg-type]
                                                  workdir / f"{who}.onnx", "logit" if who == "teacher"
                                                  else "probability"), threads=threads) for who in modules}
        runtimes["onnxruntime"] = lambda who, x: onnx_predict(sessions[who], x)
    calls = params["calls"]
    results: dict[str, Any] = {}
    for runtime, run in runtimes.items():
        per_prediction: dict[str, dict[str, list[float]]] = {who: {"1": [], "512": []} for who in modules}
        for rep, _ in _alternating(params["repeats"]):
            order = list(modules) if rep % 2 == 0 else list(reversed(modules))  # teacher and students alternate
            for who in order:
                for batch in (1, 512):
                    x = tuple(a[:batch] for a in inputs[who])
                    for _ in range(3):
                        run(who, x)
                    times = []
                    for _ in range(calls):
                        started = time.perf_counter()
                        run(who, x)
                        times.append(time.perf_counter() - started)
                    per_prediction[who][str(batch)].append(statistics.median(times) / batch * 1e6)
        results[runtime] = per_prediction
    parameters = {who: sum(p.numel() for p in module.parameters()) for who, module in modules.items()}
    operators = {who: {str(batch): _operator_profile(modules[who], tuple(a[:batch] for a in inputs[who]), calls)
                       for batch in (1, 512)} for who in modules}
    return {"us_per_prediction": results, "parameters": parameters, "operators": operators,
            "peak_rss_mb": peak_rss_mb()}


OPERATOR_TOP = 6  # operators listed per model and batch size in the serving profile


def _operator_profile(module: Any, inputs: tuple[Any, ...], calls: int) -> dict[str, Any]:
    """torch.profiler over `calls` eager forward passes: operator calls per forward (what bounds batch 1,
    where each operator's dispatch costs about the same whatever its size) and the operators with the most
    self CPU time (what bounds batch 512)."""
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs)
    with torch.inference_mode():
        module(*tensors)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                module(*tensors)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:OPERATOR_TOP]
    return {"operator_calls_per_forward": sum(e.count for e in events) / calls,
            "self_cpu_us_per_forward": total / calls,
            "top": [{"operator": e.key, "share": e.self_cpu_time_total / total, "calls_per_forward": e.count / calls}
                    for e in top]}


CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "recording": recording, "train": train, "join": join, "orchestration": orchestration, "scaling": scaling,
    "make_run": make_run, "serving": serving,
}


# --------------------------------------------------------------------------- the fixes, before vs after


def fixes(params: dict[str, Any]) -> dict[str, Any]:
    """Each scoring fix measured against what it replaced, on one evaluation day, alternating:
    the scoring batch (eval.batch_size 4096 → 512), one Arrow → tensor conversion for the report's three
    models instead of one each, and the health check's reference scores read from the previous report's
    stored scores instead of re-scored."""
    import numpy as np
    import polars as pl
    import torch

    from models.features import frame_to_tensors
    from models.inference import predict_logits, predict_tensors
    from models.student import StudentModel
    from models.teacher import TeacherModel
    from recdistill_dagster.data.sampling import sample_stream
    from recdistill_dagster.data.source import make_source
    from recdistill_dagster.health import holdout_rows

    _set_threads(params["threads"])
    config = _config(params, params["rows"] // 20)
    source = make_source(config)
    frame = source.impressions(config.calendar.training_days()[1]).head(params["rows"])
    torch.manual_seed(0)
    teacher, student = TeacherModel(source.vocab(), config.teacher.arch), StudentModel(
        source.vocab(), config.student("ranker").arch)
    cpu, t_len, s_len = torch.device("cpu"), config.teacher.arch.seq_len, config.student("ranker").arch.seq_len
    trained = frame.select("sample_id").with_row_index("row").join(
        sample_stream(frame, config.sampling.teacher, seed=config.sampling.seed).select("sample_id"),
        on="sample_id", how="semi")["row"].to_numpy()
    holdout = holdout_rows(frame["label"].to_numpy().astype(np.float64), frame["traffic_source"].to_numpy(), trained,
                           config.sampling.teacher, config.health.min_holdout_positives).rows
    stored = Path(params["workdir"]) / "scores.parquet"
    stored.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"sample_id": frame["sample_id"], "logit": np.zeros(frame.height, np.float32)}).write_parquet(stored)

    def timed(call: Callable[[], Any]) -> float:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started

    def three_conversions() -> None:
        for model, length in ((student, s_len), (student, s_len), (teacher, t_len)):
            predict_logits(model, frame, history_len=length, batch_size=512, device=cpu)

    def one_conversion() -> None:
        tensors = frame_to_tensors(frame, max(s_len, t_len), compact_history=True)
        for model in (student, student, teacher):
            predict_tensors(model, tensors, batch_size=512, device=cpu)

    def reference_rescored() -> None:
        predict_logits(teacher, frame.filter(pl.Series(holdout)), history_len=t_len, batch_size=512, device=cpu)

    def reference_stored() -> None:
        cached = pl.read_parquet(stored)
        assert cached["sample_id"].equals(frame["sample_id"])
        cached["logit"].to_numpy()[holdout]

    pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "teacher scoring, batch 4096 → 512": (
            lambda: predict_logits(teacher, frame, history_len=t_len, batch_size=4096, device=cpu),
            lambda: predict_logits(teacher, frame, history_len=t_len, batch_size=512, device=cpu)),
        "student scoring, batch 4096 → 512": (
            lambda: predict_logits(student, frame, history_len=s_len, batch_size=4096, device=cpu),
            lambda: predict_logits(student, frame, history_len=s_len, batch_size=512, device=cpu)),
        "report: three conversions → one": (three_conversions, one_conversion),
        "health reference: re-scored → stored scores": (reference_rescored, reference_stored),
    }
    results: dict[str, Any] = {}
    for name, (before, after) in pairs.items():
        after()  # warm-up
        sides: dict[str, list[float]] = {"before": [], "after": []}
        for _, before_first in _alternating(params["repeats"]):
            for side in (("before", "after") if before_first else ("after", "before")):
                sides[side].append(timed(before if side == "before" else after))
        results[name] = sides
    return {"rows": frame.height, "holdout_rows": int(holdout.sum()), "seconds": results}


CASES["fixes"] = fixes
