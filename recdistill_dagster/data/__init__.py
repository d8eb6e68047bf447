"""Pure data layer: day sources (synthetic world, MovieLens), sampling, and the teacher-logit join.

Nothing here imports Dagster; assets call these functions and own the I/O.
"""

from recdistill_dagster.data.join import drop_logit_fraction, join_stats, join_student_dataset
from recdistill_dagster.data.movielens import MovieLensSource
from recdistill_dagster.data.sampling import row_uniforms, sample_stream
from recdistill_dagster.data.source import DaySource, make_source
from recdistill_dagster.data.synthetic import SyntheticWorld

__all__ = [
    "DaySource",
    "MovieLensSource",
    "SyntheticWorld",
    "drop_logit_fraction",
    "join_stats",
    "join_student_dataset",
    "make_source",
    "row_uniforms",
    "sample_stream",
]
