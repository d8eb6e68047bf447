"""Where each artifact lives, relative to the artifact store's base URL (the state folder).

One place for every path, so assets, the CLI, the lineage audit and tests agree.
"""

from datetime import date
from typing import Literal

Stream = Literal["teacher", "student", "eval"]
ModelRole = Literal["teacher", "student", "student_baseline"]


def samples_path(stream: Stream, day: date) -> str:
    return f"samples/{stream}/{day.isoformat()}.parquet"


def teacher_logits_path(partition: date, day: date) -> str:
    # The batch partition records logits for every day of its window, one file per day.
    return f"teacher_logits/{partition.isoformat()}/{day.isoformat()}.parquet"


def student_dataset_path(partition: date, day: date) -> str:
    return f"student_dataset/{partition.isoformat()}/{day.isoformat()}.parquet"


def checkpoint_path(role: ModelRole, partition: date) -> str:
    return f"checkpoints/{role}/{partition.isoformat()}.pt"


def teacher_eval_scores_path(partition: date, snapshot_run: str) -> str:
    # Keyed by the snapshot's run: a retrained (rolled-back) teacher never reads a stale file.
    return f"eval_scores/teacher/{partition.isoformat()}/{snapshot_run}.parquet"


def report_path(day: date, name: str = "transferability.json") -> str:
    return f"reports/{day.isoformat()}/{name}"
