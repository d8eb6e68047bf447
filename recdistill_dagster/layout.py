"""Where each artifact lives, relative to the artifact store's base URL (the state folder).

One place for every path, so stages, assets, the CLI, the lineage audit and tests agree. Shared
artifacts (the day's evaluation log, the teacher's stream, checkpoints, logits and eval scores) sit at
the top; each student's own artifacts sit below `students/<name>/`.
"""

from datetime import date
from typing import Literal

SharedStream = Literal["teacher", "eval"]
StudentVariant = Literal["distilled", "baseline"]
REPORTS = "reports"
INDEX_PATH = f"{REPORTS}/index.html"  # the page comparing every student


def samples_path(stream: SharedStream, day: date) -> str:
    return f"samples/{stream}/{day.isoformat()}.parquet"


def student_samples_path(student: str, day: date) -> str:
    return f"students/{student}/samples/{day.isoformat()}.parquet"


def teacher_logits_path(partition: date, day: date) -> str:
    # The batch partition records logits for every day of its window, one file per day.
    return f"teacher_logits/{partition.isoformat()}/{day.isoformat()}.parquet"


def student_dataset_path(student: str, partition: date, day: date) -> str:
    return f"students/{student}/dataset/{partition.isoformat()}/{day.isoformat()}.parquet"


def student_dataset_manifest_path(student: str, partition: date) -> str:
    # Written after every day's file: a dataset partition exists once its manifest does.
    return f"students/{student}/dataset/{partition.isoformat()}/manifest.json"


def teacher_checkpoint_path(partition: date) -> str:
    return f"checkpoints/teacher/{partition.isoformat()}.pt"


def student_checkpoint_path(student: str, variant: StudentVariant, partition: date) -> str:
    return f"students/{student}/checkpoints/{variant}/{partition.isoformat()}.pt"


def student_serving_path(student: str, partition: date, suffix: str = "onnx") -> str:
    # The distilled main tower as served (ONNX, beside the pt2 program logged to MLflow).
    return f"students/{student}/serving/{partition.isoformat()}.{suffix}"


def teacher_serving_path(partition: date, snapshot_run: str, suffix: str = "onnx") -> str:
    # Exported once per teacher snapshot (keyed like its eval scores), to compare its serving cost.
    return f"serving/teacher/{partition.isoformat()}/{snapshot_run}.{suffix}"


def teacher_eval_scores_path(partition: date, snapshot_run: str) -> str:
    # Keyed by the snapshot's run: a retrained (rolled-back) teacher never reads a stale file. Shared
    # by every student's report (they all score the same evaluation rows).
    return f"eval_scores/teacher/{partition.isoformat()}/{snapshot_run}.parquet"


def report_path(student: str, day: date, name: str = "transferability.json") -> str:
    return f"{REPORTS}/{student}/{day.isoformat()}/{name}"


def student_index_path(student: str) -> str:
    return f"{REPORTS}/{student}/index.html"
