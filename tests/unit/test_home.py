"""The dagster.yaml the project writes is one Dagster accepts (the in-memory test instances never read it)."""

import re
from pathlib import Path

from dagster import DagsterInstance

from recdistill_dagster.home import DAGSTER_YAML


def test_written_dagster_yaml_loads_with_the_training_lane_limits(tmp_path) -> None:
    (tmp_path / "dagster.yaml").write_text(DAGSTER_YAML)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.run_queue_config.tag_concurrency_limits == [
            {"key": "recdistill/lane", "value": "training", "limit": 1}
        ]
        assert concurrency.run_queue_config.max_concurrent_runs == 4
        assert instance.telemetry_enabled is False
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30


def test_the_readme_sections_it_points_to_exist() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    headings = {line.lstrip("#").strip() for line in readme.splitlines() if line.startswith("#")}
    named = re.findall(r'README: "([^"]+)"', DAGSTER_YAML)
    assert named and all(any(h.startswith(name) for h in headings) for name in named), named
