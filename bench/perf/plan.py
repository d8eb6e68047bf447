"""What the performance benchmark measures and at which sizes: one strict pydantic model, two presets."""

from typing import Literal

from pydantic import Field

from recdistill_dagster.config import StrictModel

ModelName = Literal["teacher", "ranker", "prerank"]


class PerfPlan(StrictModel):
    """Sizes and repetitions of every case (QUICK: the same cases, smaller)."""

    quick: bool
    cpus: str = "0"  # taskset list every measuring subprocess is pinned to (one lane)
    # Lanes: the cases split over them and run concurrently, each lane's measuring processes pinned to its
    # CPU list (replacing `cpus`); every A/B comparison stays interleaved within one case, so within a lane.
    lanes: tuple[str, ...] = ()
    threads: int = Field(1, ge=1)  # torch intra-op threads (runtime.threads of the pipeline)
    # 1. recording overhead: rows of one teacher day, interleaved on/off repetitions
    recording_rows: int = Field(ge=64)
    recording_repeats: int = Field(ge=1)
    # 3. training loops: rows of one day per model, interleaved pipeline/bare repetitions
    train_rows: int = Field(ge=64)
    train_repeats: int = Field(ge=1)
    # 2. join: rows of the student's day; the logit table has `join_logit_factor` × as many rows
    join_rows: tuple[int, ...]
    join_repeats: int = Field(ge=1)
    join_history_len: int = Field(16, ge=1)
    join_logit_factor: int = Field(2, ge=1)
    join_pandas_max_rows: int = Field(30_000_000, ge=0)  # above this the pandas baseline is skipped
    # the profile whose models (and, 4.-5., world: one-day batch phase, one streaming day) the cases run
    pipeline_profile: str = "demo"
    # 4. orchestration: impressions per day at each scale (the first: the profile's own scale)
    orchestration_impressions: tuple[int, ...]
    orchestration_repeats: int = Field(ge=1)
    # 5. scaling: impressions per day of one streaming day (3 sizes spanning 10×)
    scaling_impressions: tuple[int, int, int]
    # 6. `make run` breakdown: the profile run end to end (and its overrides)
    run_profile: str
    run_overrides: dict[str, object] = Field(default_factory=dict)
    # 7. serving: timed calls after warm-up, interleaved teacher/student repetitions
    serving_calls: int = Field(ge=1)
    serving_onnx: bool = True  # also the ONNX exports under onnxruntime (when the integrations extra is there)
    serving_repeats: int = Field(ge=1)
    # the fixes, each against what it replaced: rows of one evaluation day, alternating repetitions
    fixes_rows: int = Field(ge=100)
    fixes_repeats: int = Field(ge=1)
    # profiles (py-spy) of the cases whose target is missed
    profile_rate: int = Field(40, ge=1)  # py-spy samples a second (it is not pinned; it falls behind above this)


def quick_plan() -> PerfPlan:
    """A smoke run of every case in under 5 minutes on two lanes: `tiny` models (each pipeline case sets up
    its own batch phase, which the demo teacher makes the larger part of the case), smaller sizes."""
    return PerfPlan(
        quick=True,
        pipeline_profile="tiny",
        recording_rows=2048, recording_repeats=3,
        train_rows=2048, train_repeats=3,
        join_rows=(100_000, 300_000, 1_000_000), join_repeats=2,
        orchestration_impressions=(5_000, 15_000), orchestration_repeats=2,
        scaling_impressions=(1_500, 4_700, 15_000),
        run_profile="tiny",
        serving_calls=10, serving_repeats=3,
        fixes_rows=4_000, fixes_repeats=3,
    )


def full_plan() -> PerfPlan:
    return PerfPlan(
        quick=False,
        recording_rows=16_384, recording_repeats=5,
        train_rows=16_384, train_repeats=3,
        join_rows=(1_000_000, 10_000_000, 30_000_000), join_repeats=3,
        orchestration_impressions=(60_000, 240_000), orchestration_repeats=3,
        scaling_impressions=(20_000, 63_000, 200_000),
        run_profile="demo",
        serving_calls=50, serving_repeats=5,
        fixes_rows=60_000, fixes_repeats=3,
    )
