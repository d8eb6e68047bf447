"""recdistill-dagster: the Rec-Distill teacher→student pipeline orchestrated with Dagster.

This package root stays free of Dagster imports so that `recdistill_dagster.config` and
`recdistill_dagster.data` can be used by pure code (models, tests) without loading Dagster.
The `Definitions` live in `recdistill_dagster.definitions`.
"""

__version__ = "0.1.0"
