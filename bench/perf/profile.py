"""Summaries of py-spy profiles (raw collapsed stacks): where the sampled time of a case went."""

from collections import Counter
from pathlib import Path
from typing import Any

from bench.perf.measure import REPO


def _function(frame: str) -> str:
    """`train_teacher (/…/models/training.py:170)` → `train_teacher (models/training.py)`."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif path.startswith(f"{REPO}/"):
        path = path[len(str(REPO)) + 1 :]
    return f"{name} ({path})" if path else name


def read_stacks(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def package_of(frame: str) -> str:
    """The installed package a frame's file belongs to, `project` for this repository's code."""
    path = frame.partition(" (")[2]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif path.startswith(f"{REPO}/"):
        path = path[len(str(REPO)) + 1 :]
    top = path.split("/", 1)[0].split(".", 1)[0].split(":", 1)[0]
    return "project" if top in PROJECT_PACKAGES else top


PROJECT_PACKAGES = ("recdistill_dagster", "models", "assets", "resources", "bench")


OWNERS = {"dagster": ("dagster", "dagster_shared", "dagster_pipes"), "mlflow": ("mlflow",), "project": ("project",)}


def _named(function: str, names: tuple[str, ...]) -> bool:
    """A function by its name, or a method by its own name (`Class.name` matches `name`)."""
    return any(function == name or function.endswith(f".{name}") for name in names)


def summarize(raw: Path, within: tuple[str, ...] = (), inclusive: tuple[str, ...] = (), top: int = 12,
              owners: bool = False) -> dict[str, Any]:
    """Self time of the `top` hottest functions and inclusive time of the named functions, as fractions of
    the samples under `within`. With `owners`, each sample also goes to whichever of Dagster, MLflow and
    this project holds its innermost frame (what each spends, including the libraries it calls)."""
    self_time: Counter[str] = Counter()
    included: Counter[str] = Counter()
    owned: Counter[str] = Counter()
    owner_functions: dict[str, Counter[str]] = {name: Counter() for name in OWNERS}
    total = 0
    for frames, count in read_stacks(raw):
        if within:
            start = next((i for i, f in enumerate(frames) if _named(f.split(" (")[0], within)), None)
            if start is None:
                continue
            frames = frames[start:]
        total += count
        self_time[_function(frames[-1])] += count
        names = {f.split(" (")[0] for f in frames}
        for name in inclusive:
            if any(_named(n, (name,)) for n in names):
                included[name] += count
        if owners:
            owner = "unattributed"
            for frame in reversed(frames):
                package = package_of(frame)
                found = next((name for name, members in OWNERS.items() if package in members), None)
                if found:
                    owner = found
                    break
            owned[owner] += count
            if owner in ("dagster", "mlflow"):  # which of the owner's own functions the sample passed through
                for name in {_function(f) for f in frames if package_of(f) in OWNERS[owner]}:
                    owner_functions[owner][name] += count
    share = (lambda n: n / total) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "within": ", ".join(within) or "the whole process",
        "self": [{"function": name, "share": share(n)} for name, n in self_time.most_common(top)],
        "inclusive": {name: share(included[name]) for name in inclusive},
        "owners": {name: share(n) for name, n in owned.most_common()},
        # inclusive, as shares of all samples: e.g. Dagster's event-log writes within Dagster's own time
        "owner_functions": {owner: [{"function": name, "share": share(n)} for name, n in counts.most_common(top)]
                            for owner, counts in owner_functions.items() if counts},
    }
