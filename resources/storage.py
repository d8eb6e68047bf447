"""The artifact store as a Dagster resource (the store itself, `recdistill_dagster.storage`, has no Dagster)."""

from dagster import ConfigurableResource

from recdistill_dagster.storage import ArtifactStore


class ArtifactStoreResource(ConfigurableResource):
    """Where the pipeline's files live: a local folder by default, or any fsspec URL (s3://…)."""

    base_url: str

    def open(self) -> ArtifactStore:
        return ArtifactStore(self.base_url)
