"""Small numeric helpers shared by the data tests."""

import numpy as np
import polars as pl

from recdistill_dagster.data.schema import FeatureVocab


def auc(scores: np.ndarray | pl.Series, labels: np.ndarray | pl.Series) -> float:
    """Rank AUC (ties get average ranks)."""
    y = np.asarray(labels) == 1
    ranks = pl.Series(np.asarray(scores, dtype=np.float64)).rank("average").to_numpy()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def history_matrix(frame: pl.DataFrame) -> np.ndarray:
    """(n, L) history item ids; every row of a synthetic day carries the same length."""
    return np.stack(frame["history"].to_numpy())


def creator_count_in_window(frame: pl.DataFrame, vocab: FeatureVocab, window: int) -> np.ndarray:
    """How often the candidate's creator occurs in the newest `window` history events."""
    creators = vocab.item_creator[history_matrix(frame)[:, -window:]]
    return (creators == frame["creator"].to_numpy()[:, None]).sum(axis=1)
