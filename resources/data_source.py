"""The sample source behind one interface: the synthetic world or a MovieLens-format reader."""

from functools import lru_cache

from dagster import ConfigurableResource, ResourceDependency

from recdistill_dagster.config import PipelineConfig
from recdistill_dagster.data.source import DaySource, make_source
from resources.settings import PipelineSettings


@lru_cache(maxsize=4)
def _cached_source(config_json: str) -> DaySource:
    # Sources precompute state (user histories, catalogues); reuse them across assets in a process.
    return make_source(PipelineConfig.model_validate_json(config_json))


class RecDataSource(ConfigurableResource):
    """Produces a day's full impression log; which source is chosen by `config.data.kind`."""

    settings: ResourceDependency[PipelineSettings]

    def source(self, config: PipelineConfig | None = None) -> DaySource:
        """The source of `config` (the run's resolved configuration); the bound settings' otherwise. The
        nested settings keep the code location's values: a launch override of `settings` reaches only the
        top-level resource, so the assets pass the configuration they resolved."""
        return _cached_source((config or self.settings.config()).model_dump_json())
