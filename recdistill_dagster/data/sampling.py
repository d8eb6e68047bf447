"""Sampling a logged training stream from a day's unsampled impressions.

Each row gets one uniform u derived from (seed, sample_id) by an integer hash, so the decision does
not depend on row order, and two policies applied to the same day share u. With keep rules
`u < rate`, a policy whose rates are all lower than another's keeps a subset of its rows: the
student stream is a subset of the teacher stream, as in production where the student's log is a
down-sample of the same traffic.
"""

import numpy as np
import polars as pl

from recdistill_dagster.config import SamplingPolicy
from recdistill_dagster.data.schema import SAMPLE_SCHEMA

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic is intended)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def row_uniforms(sample_ids: np.ndarray | pl.Series, seed: int) -> np.ndarray:
    """A uniform in [0, 1) per sample id, a pure function of (seed, sample_id)."""
    ids = np.asarray(sample_ids, dtype=np.int64).view(np.uint64)
    seed_key = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    with np.errstate(over="ignore"):
        hashed = _splitmix64(ids ^ seed_key)
    # Top 53 bits -> an exactly representable double in [0, 1).
    return (hashed >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def sample_stream(impressions: pl.DataFrame, policy: SamplingPolicy, *, seed: int) -> pl.DataFrame:
    """Keep positives with p_x(source) and negatives with negative_keep; stamp the policy's columns."""
    n_sources = len(policy.positive_keep_by_source)
    largest = int(impressions["traffic_source"].to_numpy().max()) if impressions.height else -1
    if largest >= n_sources:
        raise ValueError(
            f"traffic_source {largest} has no positive keep rate: the policy "
            f"lists {n_sources} source(s)"
        )
    p_x = np.asarray(policy.positive_keep_by_source, dtype=np.float64)[
        impressions["traffic_source"].to_numpy()
    ]
    u = row_uniforms(impressions["sample_id"], seed)
    positive = impressions["label"].to_numpy() == 1
    keep = np.where(positive, u < p_x, u < policy.negative_keep)
    kept = impressions.with_columns(p_x=pl.Series(p_x)).filter(pl.Series(keep))
    return kept.with_columns(
        r_s=pl.lit(policy.r_s, dtype=pl.Float32),
        r_pos=pl.lit(policy.r_pos, dtype=pl.Float32),
        p_x=pl.col("p_x").cast(pl.Float32),
        b_s=pl.lit(policy.b_s, dtype=pl.Float32),
    ).select(SAMPLE_SCHEMA.keys())
