"""A real `kill -9` of a process in the middle of writing a partition file.

The previous version must stay readable, no reader may see a partial file, and the next write of
the same target must succeed and clean up the dead writer's temporary.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from recdistill_dagster.storage import ArtifactStore

pytestmark = pytest.mark.scenario

TARGET = "samples/teacher/2026-01-01.parquet"
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import polars as pl
    from recdistill_dagster.storage import ArtifactStore

    store = ArtifactStore(sys.argv[1])
    big = pl.DataFrame({"sample_id": np.arange(30_000_000), "value": np.random.default_rng(0).random(30_000_000)})
    print("writing", flush=True)
    while True:  # keep rewriting until killed
        store.write_parquet(sys.argv[2], big)
    """
)


def test_kill_9_mid_write_keeps_previous_version(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    previous = pl.DataFrame({"sample_id": [1, 2, 3], "value": [0.1, 0.2, 0.3]})
    store.write_parquet(TARGET, previous)
    final = tmp_path / TARGET
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), TARGET],
        stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == b"writing"
        deadline = time.monotonic() + 60
        # Wait until the temporary exists and has data in it, then kill the writer mid-write.
        while time.monotonic() < deadline:
            temporaries = list(final.parent.glob(final.name + ".tmp-*"))
            if temporaries and temporaries[0].exists() and temporaries[0].stat().st_size > 1_000_000:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the writer never started writing its temporary")
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == -signal.SIGKILL
    # The final name still holds a complete file: the previous version, or, had a rewrite finished
    # before the kill, a whole new one; never a partial one.
    survivor = store.read_parquet(TARGET)
    assert survivor.equals(previous) or survivor.height == 30_000_000
    # Re-materializing replaces the file exactly and removes the dead writer's temporary.
    replacement = pl.DataFrame({"sample_id": [7], "value": [0.7]})
    store.write_parquet(TARGET, replacement)
    assert store.read_parquet(TARGET).equals(replacement)
    assert not list(final.parent.glob(final.name + ".tmp-*"))
