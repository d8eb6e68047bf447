"""The pipeline configuration as a Dagster resource: a named profile plus an optional YAML file."""

from functools import lru_cache

from dagster import ConfigurableResource

from recdistill_dagster.config import PipelineConfig, load_config


@lru_cache(maxsize=16)
def _cached_config(profile: str, config_file: str | None) -> PipelineConfig:
    return load_config(profile, config_file)


class PipelineSettings(ConfigurableResource):
    """Selects the configuration profile (tiny, demo, bench, movielens) and an override file.

    Every tunable lives in `recdistill_dagster.config`; invalid or unknown keys fail the run with
    a message naming the key.
    """

    profile: str = "demo"
    config_file: str | None = None

    def config(self) -> PipelineConfig:
        return _cached_config(self.profile, self.config_file)
