"""Code versions of the assets: a short hash of the source files each asset's output depends on.

Dagster records an asset's `code_version` with every materialization and, when the definition's
version differs, shows those partitions as stale ("code version changed") in the UI. Hashing the
sources means nobody has to remember to bump a string: edit the teacher's model or its step, and
every teacher partition (and what descends from it) shows as stale until re-materialized. The same
source gives the same version on every machine; configuration is not code (a profile change is
seen through the data versions instead).
"""

import hashlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What each step's output depends on, as globs relative to the repository root.
SOURCES: dict[str, tuple[str, ...]] = {
    "samples": ("recdistill_dagster/data/*.py", "recdistill_dagster/steps.py", "assets/samples.py"),
    "teacher": ("models/*.py", "recdistill_dagster/data/schema.py", "recdistill_dagster/health.py",
                "recdistill_dagster/steps.py", "assets/teacher.py"),
    "student_dataset": ("recdistill_dagster/data/join.py", "recdistill_dagster/data/schema.py",
                        "recdistill_dagster/steps.py", "assets/student.py"),
    "student": ("models/*.py", "recdistill_dagster/data/schema.py", "recdistill_dagster/steps.py",
                "assets/student.py"),
    "report": ("models/*.py", "recdistill_dagster/steps.py", "recdistill_dagster/reporting.py",
               "recdistill_dagster/report_site.py", "assets/evaluation.py"),
}


def source_hash(globs: tuple[str, ...], root: Path = ROOT) -> str:
    """12 hex characters of SHA-256 over the matching files' paths and contents, in sorted order."""
    digest = hashlib.sha256()
    files = sorted({path for pattern in globs for path in root.glob(pattern) if path.is_file()})
    if not files:
        raise FileNotFoundError(f"no source file matches {globs} under {root}")
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@cache
def code_version(step: str) -> str:
    """The code version of one step's assets (see SOURCES)."""
    return source_hash(SOURCES[step])
