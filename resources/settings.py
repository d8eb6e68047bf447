"""The pipeline configuration as a Dagster resource: the deployment's profile, plus optional overrides.

The profile a code location serves is fixed when it is loaded (`RECDISTILL_PROFILE`, or the argument of
`build_definitions`): its partitions, schedules, asset graph and state folder are built from it. It is
bound to the resource's class (`for_deployment`), not given as a schema default: Dagster fills the run
config fields a launch leaves out with the schema defaults, so a default profile would silently replace
the deployment's whenever a launch sets only `config_file` (measured: the launchpad with only
`config_file` trained profile `demo` on a `tiny` code location).
"""

from functools import lru_cache
from typing import ClassVar

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from recdistill_dagster.config import ConfigError, PipelineConfig, load_config


@lru_cache(maxsize=16)
def _cached_config(profile: str, config_files: tuple[str, ...]) -> PipelineConfig:
    return load_config(profile, config_files)


def _shape(config: PipelineConfig) -> tuple[object, ...]:
    """What the code location's partitions and asset graph were built from."""
    return config.calendar, tuple(s.name for s in config.active_students)


class PipelineSettings(ConfigurableResource):
    """The configuration of a run: the deployment's profile, and an optional YAML file of overrides.

    Every tunable lives in `recdistill_dagster.config`; invalid or unknown keys fail the run with a
    message naming the key.
    """

    # Set by `for_deployment` on a subclass; never part of the run config.
    deployment_profile: ClassVar[str | None] = None
    deployment_config_file: ClassVar[str | None] = None

    profile: str | None = Field(
        default=None,
        description="Leave empty (or the code location's own profile): the profile is the deployment's. "
                    "Naming another profile is an error.",
    )
    config_file: str | None = Field(
        default=None,
        description="A YAML file of overrides, applied on top of the deployment's profile and file.",
    )

    @classmethod
    def for_deployment(cls, profile: str, config_file: str | None = None) -> "PipelineSettings":
        """The resource of a code location serving `profile` (with the deployment's own override file)."""
        bound = type(cls.__name__, (cls,), {
            "deployment_profile": profile, "deployment_config_file": config_file,
            "__module__": cls.__module__, "__qualname__": cls.__qualname__,
        })
        return bound(profile=profile)

    def resolved_profile(self) -> str:
        deployment = type(self).deployment_profile
        if deployment is None:  # a bare resource (tests of the resource alone): its own field decides
            if self.profile is None:
                raise ConfigError("no profile: the settings resource was built without a deployment profile")
            return self.profile
        if self.profile is not None and self.profile != deployment:
            raise ConfigError(
                f"the launch configuration names profile {self.profile!r}, but this code location serves profile "
                f"{deployment!r} (its partitions, schedules and state folder belong to {deployment!r}). Remove "
                f"`profile` from resources.settings.config, or load a code location for {self.profile!r} "
                f"(RECDISTILL_PROFILE={self.profile}, e.g. `make ui PROFILE={self.profile}`)"
            )
        return deployment

    def config_files(self) -> tuple[str, ...]:
        files = (type(self).deployment_config_file, self.config_file)
        return tuple(dict.fromkeys(f for f in files if f))

    def config(self) -> PipelineConfig:
        config = _cached_config(self.resolved_profile(), self.config_files())
        deployment = type(self).deployment_profile
        if deployment is not None and self.config_file:
            served = _cached_config(deployment, tuple(f for f in (type(self).deployment_config_file,) if f))
            if _shape(config) != _shape(served):
                raise ConfigError(
                    f"the launch override file {self.config_file} changes the calendar or the set of students, "
                    f"which this code location's partitions and asset graph were built from; serve it from the "
                    f"code location instead (RECDISTILL_CONFIG={self.config_file})"
                )
        return config

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.config()  # a run with a conflicting launch configuration fails before any step starts
