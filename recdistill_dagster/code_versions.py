"""Code versions of the assets: a short hash of the source files a stage's output depends on.

Dagster records an asset's `code_version` with every materialization and, when the definition's
version differs, shows those partitions as stale ("code version changed") in the UI. The files are
found, not listed: a stage module and every project module it imports, transitively (read from the
import statements). Edit the teacher's model or its stage and the teacher's partitions show as stale;
edit the report and the sample streams do not. The same source gives the same version on every
machine. The configuration module is left out: configuration is not code (a changed profile shows
through the data versions and the config fingerprint every checkpoint records).
"""

import ast
import hashlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("recdistill_dagster", "models")
# Imported by nearly everything and holding no computation of a stage's output.
NOT_CODE = frozenset({"recdistill_dagster/config.py"})


def _module_file(module: str, root: Path) -> Path | None:
    path = root.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """First-party modules imported by a file (`from a.b import c` yields a.b and a.b.c if c is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in FIRST_PARTY}


def source_files(module: str, root: Path = ROOT) -> list[Path]:
    """The module's file and every first-party file it imports, transitively, sorted."""
    start = _module_file(module, root)
    if start is None:
        raise FileNotFoundError(f"no source file for module {module!r} under {root}")
    seen: set[Path] = set()
    queue = [start]
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        queue.extend(file for name in _imports(path) if (file := _module_file(name, root)) is not None)
    return sorted(p for p in seen if p.relative_to(root).as_posix() not in NOT_CODE)


def source_hash(files: list[Path], root: Path = ROOT) -> str:
    """12 hex characters of SHA-256 over the files' paths and contents, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@cache
def code_version(module: str) -> str:
    """The code version of the assets computed by `module` (a stage module)."""
    return source_hash(source_files(module))
