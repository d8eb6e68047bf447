"""Pure data layer: day sources (synthetic world, MovieLens), sampling, the teacher-logit join and the
data contracts (`schema`). Nothing here imports Dagster. Import the modules themselves: this package
re-exports nothing, so `config` can read the schema's feature names without a cycle."""
