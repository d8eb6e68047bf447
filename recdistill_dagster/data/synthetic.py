"""A deterministic synthetic ads/feed world with a known click probability.

The world exists so that the pipeline can be judged against ground truth: every impression row
carries `p_true`, so the Bayes limit (AUC of `p_true`) and calibration are measurable.

Entities (all drawn once from the config seed):
- users: a segment (static trait), a long-lived preference over categories (partly shared within
  the segment), a few favourite creators, an activity level, a novelty-seeking trait, a bias;
  plus a short-lived *intent* category that is sticky across days (switches with
  `intent_switch_prob` per day).
- items: a category and a creator (creators mostly work in one category), a birth day
  (`n_items_new_per_day` are born every day), a popularity and a quality that drift day to day
  (random walks, log-space for popularity). The item vocabulary is fixed (models size their
  embeddings from it) with room for `MAX_DAYS` days of births; from day `MAX_DAYS` on, each day's
  new items take the ids of the items born `MAX_DAYS` days earlier, which retire: same creator and
  category, a fresh popularity and quality, age 0. So any day can be generated (an open-ended
  calendar), and every day before `MAX_DAYS` is exactly what it was without recycling.
- behaviour history: every user has `prehistory_len` events before day 0 and
  `behaviour_events_per_day` per day after, drawn from favourite creators, the current intent,
  long-term category preferences and global popularity. Rows carry the newest
  `logged_history_len` events as of the start of the day.

Click logit (intercept calibrated once, on day 0, to `target_click_rate`):
  user bias + saturating category affinity + intent match x traffic-source gain
  + saturating creator affinity from the user's FULL history (favourite creators are each only a
  few % of events: a short window rarely sees them, a long one does)
  - fatigue when the candidate's category dominates the last few events
  + popularity + drifting quality + novelty trait x item freshness + segment x hour
  + traffic-source offset - activity
  + (off unless `category_complementarity` > 0) the mean over the logged history of a random full-rank
  category x category interaction M[event category, candidate category].

Ids: user ids are 0..n_users-1; item ids are 1..n_items-1 with 0 the padding item. Categories and
creators are 1-based too: 0 is reserved for the padding item, so the vocabulary sizes are
`n_categories + 1` and `n_creators + 1`.

Determinism: every random draw comes from a Generator seeded by (seed, stream, step) through
numpy's SeedSequence, and day-to-day state advances only from those per-day streams, so a day's
frame is bit-identical whichever days were generated before it. State checkpoints are a cache.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import IntEnum

import numpy as np
import polars as pl

from recdistill_dagster.config import SyntheticWorldConfig
from recdistill_dagster.data.schema import SAMPLE_SCHEMA, FeatureVocab

# The item vocabulary is fixed up front (models size their embedding tables from it): item slots are
# pre-allocated for this many days of births, then recycled (see the module docstring).
MAX_DAYS = 400
# sample_id = day_index * SAMPLE_ID_STRIDE + row: unique across days as long as a day has fewer rows.
SAMPLE_ID_STRIDE = 10**8
N_HOURS = 24

_MICROS_PER_HOUR = 3_600 * 1_000_000
# SeedSequence needs non-negative entropy; steps can be negative (prehistory blocks).
_STEP_OFFSET = 2**32
_CHECKPOINT_EVERY = 10
_MAX_CHECKPOINTS = 6
_EVENTS_PER_CHUNK = 2**18

# Behaviour-event channels (shares of a user's events).
_EVENT_FAVOURITE_SHARE = 0.12
_EVENT_INTENT_SHARE = 0.28
_EVENT_GLOBAL_SHARE = 0.08

# Impression channels: 0 = user's preferred category, 1 = intent category, 2 = a creator from the
# user's logged history (item-to-item retrieval), 3 = global popularity. Shares by source kind;
# source s uses row s % 3 (feed-like, search-like, ads-like).
_CHANNEL_SHARES = np.array(
    [
        [0.35, 0.15, 0.15, 0.35],
        [0.20, 0.60, 0.05, 0.15],
        [0.30, 0.10, 0.10, 0.50],
    ]
)
_SOURCE_OFFSET = np.array([0.0, 0.3, -0.6])
# Intent matters most where the user expresses it (search), least on ads: an interaction.
_SOURCE_INTENT_GAIN = np.array([0.8, 1.6, 0.3])

# Click-logit term scales.
_W_CATEGORY = 1.2
_W_CREATOR = 1.6
_CREATOR_SATURATION = 0.02  # share of full history at which creator affinity saturates (tanh scale)
_FATIGUE_WINDOW = 10
_FATIGUE_FREE = 3  # occurrences in the window that cost nothing
_W_FATIGUE = 0.5
_W_POPULARITY = 0.35
_W_FRESHNESS = 0.8
_FRESHNESS_DAYS = 3.0
_W_HOUR = 0.35
_W_ACTIVITY = -0.15
_FRESH_EXPOSURE_BOOST = 2.0  # new items get extra exposure for their first days
_ACTIVITY_EXPOSURE = 0.8  # impressions per user ∝ exp(0.8 * standardized log activity)
# Impressions over-sample popular items and active users (exposure ∝ exp(x) tilts a normal's mean
# by its variance), so the observed features are re-centred by these shifts to be ~N(0, 1) per row.
_POP_SCALE = 1.1  # std of initial log popularity
_POP_SHIFT = _POP_SCALE**2
_ACTIVITY_SHIFT = _ACTIVITY_EXPOSURE


class _Stream(IntEnum):
    STATIC = 1
    INTENT = 2
    PREHISTORY = 3
    EVENTS = 4
    POPULARITY = 5
    QUALITY = 6
    IMPRESSIONS = 7
    OBSERVED = 8
    LABELS = 9
    REBIRTH = 10  # the fresh popularity and quality of recycled item slots
    COMPLEMENTARITY = 11  # its own stream: turning the term on leaves every other draw unchanged


def _rng(seed: int, stream: _Stream, step: int = 0, part: int = 0) -> np.random.Generator:
    """An independent generator per (seed, stream, step, part); never Python's hash()."""
    entropy = [seed % 2**63, int(stream), step + _STEP_OFFSET, part]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class _GroupIndex:
    """Items sorted by a group key (category or creator) for weighted draws within a group."""

    order: np.ndarray  # item indices sorted by group
    bounds: np.ndarray  # (n_groups + 1,) start of each group in `order`

    @classmethod
    def build(cls, groups: np.ndarray, n_groups: int) -> "_GroupIndex":
        order = np.argsort(groups, kind="stable")
        bounds = np.searchsorted(groups[order], np.arange(n_groups + 1), side="left")
        return cls(order=order, bounds=bounds)

    def cumulative(self, weights: np.ndarray) -> np.ndarray:
        return np.cumsum(weights[self.order])

    def draw(
        self, cum: np.ndarray, weights: np.ndarray, groups: np.ndarray, u: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One item per row from its group, proportional to `weights` (`cum` = cumulative(weights));
        `ok` is False where the group has no positive weight (the caller falls back)."""
        lo = np.where(self.bounds[groups] > 0, cum[self.bounds[groups] - 1], 0.0)
        hi = np.where(self.bounds[groups + 1] > 0, cum[self.bounds[groups + 1] - 1], 0.0)
        pos = np.searchsorted(cum, lo + u * (hi - lo), side="right")
        pos = np.clip(pos, 0, len(cum) - 1)
        items = self.order[pos]
        # Float round-off at a group's upper edge could land on a neighbour or an unborn item.
        ok = (hi > lo) & (weights[items] > 0) & (pos < self.bounds[groups + 1])
        return items, ok


@dataclass(frozen=True)
class _ItemSampler:
    """Weighted item draws for one day's exposure weights: by creator, by category, or anywhere."""

    static: "_Static"
    weights: np.ndarray
    cum_creator: np.ndarray
    cum_category: np.ndarray
    cum_all: np.ndarray

    @classmethod
    def build(cls, static: "_Static", weights: np.ndarray) -> "_ItemSampler":
        return cls(
            static=static,
            weights=weights,
            cum_creator=static.by_creator.cumulative(weights),
            cum_category=static.by_category.cumulative(weights),
            cum_all=static.everything.cumulative(weights),
        )

    def draw(self, creator: np.ndarray, category: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Per row: from `creator` if >= 0, else from `category` if >= 0, else from all live items.

        A group without a live item falls through to the next option, so every row gets an item.
        """
        st = self.static
        items = np.full(len(u), -1, dtype=np.int64)
        want = np.flatnonzero(creator >= 0)
        got, ok = st.by_creator.draw(self.cum_creator, self.weights, creator[want], u[want])
        items[want[ok]] = got[ok]
        want = np.flatnonzero((items < 0) & (category >= 0))
        got, ok = st.by_category.draw(self.cum_category, self.weights, category[want], u[want])
        items[want[ok]] = got[ok]
        want = np.flatnonzero(items < 0)
        got, _ = st.everything.draw(self.cum_all, self.weights, np.zeros(len(want), dtype=np.int64), u[want])
        items[want] = got
        return items


@dataclass(frozen=True)
class _Static:
    """Everything that does not change over time."""

    segment: np.ndarray  # (U,) int64
    pref: np.ndarray  # (U, C) long-term category preference, rows sum to 1
    pref_cum: np.ndarray  # (U*C,) user index + cumulative preference: one searchsorted draws all
    favourites: np.ndarray  # (U, F) 0-based creators
    activity_log: np.ndarray  # (U,) standardized log activity
    activity_cum: np.ndarray  # (U,) cumulative activity weights: who gets impressions
    novelty: np.ndarray  # (U,)
    user_bias: np.ndarray  # (U,)
    item_category: np.ndarray  # (I,) 0-based, item index = item id - 1
    item_creator: np.ndarray  # (I,) 0-based
    item_birth: np.ndarray  # (I,) day index of birth (negative for the initial catalogue)
    logpop0: np.ndarray  # (I,)
    quality0: np.ndarray  # (I,)
    by_category: _GroupIndex
    by_creator: _GroupIndex
    everything: _GroupIndex
    hour_cum: np.ndarray  # (24,)
    hour_peak: np.ndarray  # (S,) preferred hour per segment
    source_cum: np.ndarray  # (n_sources,)
    complementarity: np.ndarray  # (C, C) logit of a history category next to a candidate category


@dataclass(frozen=True)
class _State:
    """The world at the start of `day` (arrays are never mutated: checkpoints share them)."""

    day: int
    intent: np.ndarray  # (U,) 0-based intent category of this day
    logpop: np.ndarray  # (I,)
    quality: np.ndarray  # (I,)
    history: np.ndarray  # (U, min(L, n_events)) int32 item ids, oldest first
    creator_counts: np.ndarray  # (U, n_creators) occurrences in the full history
    n_events: int


@dataclass(frozen=True)
class _Draw:
    """One day's impressions before they become a frame (rows in event-time order)."""

    user: np.ndarray
    item: np.ndarray  # 0-based item index
    source: np.ndarray
    hour: np.ndarray
    micros: np.ndarray  # microseconds since midnight UTC


def _build_static(cfg: SyntheticWorldConfig) -> _Static:
    rng = _rng(cfg.seed, _Stream.STATIC)
    n_users, n_cat, n_cr, n_seg = cfg.n_users, cfg.n_categories, cfg.n_creators, cfg.n_segments

    segment = rng.integers(0, n_seg, n_users)
    # Segment-level tastes make `user_segment` informative; the user-level part makes ids matter.
    segment_taste = rng.normal(0.0, 1.0, (n_seg, n_cat))
    pref_logits = segment_taste[segment] + rng.normal(0.0, 1.0, (n_users, n_cat))
    pref = np.exp(pref_logits - pref_logits.max(axis=1, keepdims=True))
    pref /= pref.sum(axis=1, keepdims=True)
    pref_cum = (np.cumsum(pref, axis=1) + np.arange(n_users)[:, None]).ravel()

    activity_log = rng.normal(0.0, 1.0, n_users)
    activity_cum = np.cumsum(np.exp(_ACTIVITY_EXPOSURE * activity_log))
    novelty = rng.normal(0.0, 1.0, n_users)
    user_bias = rng.normal(0.0, 0.4, n_users)

    n_items = cfg.n_items_initial + cfg.n_items_new_per_day * MAX_DAYS
    creator_home = rng.integers(0, n_cat, n_cr)
    productivity = np.exp(rng.normal(0.0, 0.7, n_cr))
    creator = rng.choice(n_cr, size=n_items, p=productivity / productivity.sum())
    # Every creator gets at least one initial item (when the catalogue is big enough) so favourite
    # creators can always be drawn from.
    n_cover = min(n_cr, cfg.n_items_initial)
    creator[:n_cover] = rng.permutation(n_cr)[:n_cover]
    category = np.where(rng.random(n_items) < 0.7, creator_home[creator], rng.integers(0, n_cat, n_items))
    new_birth = np.repeat(np.arange(MAX_DAYS), cfg.n_items_new_per_day)
    birth = np.concatenate([-rng.integers(1, 366, cfg.n_items_initial), new_birth])
    logpop0 = np.concatenate(
        [
            rng.normal(0.0, _POP_SCALE, cfg.n_items_initial),
            rng.normal(-0.3, 1.0, n_items - cfg.n_items_initial),
        ]
    )
    quality0 = rng.normal(0.0, 0.5, n_items)

    eligible = np.unique(creator[: cfg.n_items_initial])
    favourites = _draw_favourites(rng, eligible, n_users, cfg.favourite_creators_per_user)

    hours = np.arange(N_HOURS)
    hour_weights = 1.0 + 0.8 * np.cos(2 * np.pi * (hours - 20) / N_HOURS)  # evening peak
    return _Static(
        segment=segment,
        pref=pref,
        pref_cum=pref_cum,
        favourites=favourites,
        activity_log=activity_log,
        activity_cum=activity_cum,
        novelty=novelty,
        user_bias=user_bias,
        item_category=category,
        item_creator=creator,
        item_birth=birth,
        logpop0=logpop0,
        quality0=quality0,
        by_category=_GroupIndex.build(category, n_cat),
        by_creator=_GroupIndex.build(creator, n_cr),
        everything=_GroupIndex.build(np.zeros(n_items, dtype=np.int64), 1),
        hour_cum=np.cumsum(hour_weights / hour_weights.sum()),
        hour_peak=rng.integers(0, N_HOURS, n_seg),
        source_cum=np.cumsum(cfg.traffic_source_share),
        complementarity=cfg.category_complementarity
        * _rng(cfg.seed, _Stream.COMPLEMENTARITY).normal(0.0, 1.0, (n_cat, n_cat)),
    )


def _draw_favourites(rng: np.random.Generator, eligible: np.ndarray, n_users: int, n_fav: int) -> np.ndarray:
    """`n_fav` distinct creators per user among those with initial items."""
    keys = rng.random((n_users, len(eligible)))
    if n_fav >= len(eligible):
        return np.tile(eligible, (n_users, 1 + n_fav // len(eligible)))[:, :n_fav]
    return eligible[np.argpartition(keys, n_fav, axis=1)[:, :n_fav]]


class SyntheticWorld:
    """Day source of the synthetic world: `vocab()` and the full unsampled `impressions(day)`."""

    def __init__(self, config: SyntheticWorldConfig, start_date: date) -> None:
        if config.impressions_per_day >= SAMPLE_ID_STRIDE:
            raise ValueError(f"impressions_per_day must be < {SAMPLE_ID_STRIDE} for unique sample ids")
        self.config = config
        self.start_date = start_date
        self._static = _build_static(config)
        self._checkpoints: OrderedDict[int, _State] = OrderedDict()
        self._intercept: float | None = None

    # ------------------------------------------------------------------ public API

    @property
    def n_items(self) -> int:
        """Vocabulary size of item ids (padding item 0 included)."""
        return 1 + self.config.n_items_initial + self.config.n_items_new_per_day * MAX_DAYS

    def vocab(self) -> FeatureVocab:
        st = self._static
        # Index 0 is the padding item, whose category and creator are the reserved id 0.
        item_category = np.concatenate([[0], st.item_category + 1]).astype(np.int64)
        item_creator = np.concatenate([[0], st.item_creator + 1]).astype(np.int64)
        return FeatureVocab(
            n_users=self.config.n_users,
            n_items=self.n_items,
            n_categories=self.config.n_categories + 1,
            n_creators=self.config.n_creators + 1,
            n_traffic_sources=self.config.n_traffic_sources,
            n_hours=N_HOURS,
            n_segments=self.config.n_segments,
            item_category=item_category,
            item_creator=item_creator,
        )

    def day_index(self, day: date) -> int:
        index = (day - self.start_date).days
        if index < 0:
            raise ValueError(f"day {day} is before the synthetic world's start date {self.start_date}")
        return index

    def birth_days(self, d: int) -> np.ndarray:
        """Each item slot's birth day as of day index `d`: the static one until the slot is recycled."""
        birth = self._static.item_birth
        if d < MAX_DAYS:
            return birth
        first_new = self.config.n_items_initial
        block = birth[first_new:]  # the day index each slot's first occupant was born on (0..MAX_DAYS-1)
        return np.concatenate([birth[:first_new], d - (d - block) % MAX_DAYS])

    def behaviour_events_before(self, day: date) -> int:
        """Length of every user's full behaviour history at the start of `day` (rows log the tail)."""
        return self.config.prehistory_len + self.day_index(day) * self.config.behaviour_events_per_day

    def impressions(self, day: date) -> pl.DataFrame:
        """All impressions of `day`, unsampled, in event-time order, matching SAMPLE_SCHEMA."""
        d = self.day_index(day)
        state = self._state_at(d)
        draw = self._draw_impressions(state)
        logit = self.intercept() + self._logit_terms(state, draw).sum(axis=1)
        p_true = _sigmoid(logit)
        label = (_rng(self.config.seed, _Stream.LABELS, d).random(len(p_true)) < p_true).astype(np.int8)
        return self._frame(day, d, state, draw, p_true, label)

    def logit_terms(self, day: date) -> pl.DataFrame:
        """Diagnostics: the additive terms of each row's click logit (same rows as impressions)."""
        d = self.day_index(day)
        state = self._state_at(d)
        draw = self._draw_impressions(state)
        terms = self._logit_terms(state, draw)
        ids = d * SAMPLE_ID_STRIDE + np.arange(len(draw.user), dtype=np.int64)
        columns = {"sample_id": ids, **{name: terms[:, i] for i, name in enumerate(LOGIT_TERMS)}}
        return pl.DataFrame(columns).with_columns(intercept=pl.lit(self.intercept()))

    def intercept(self) -> float:
        """Click-logit intercept, calibrated once on day 0 so its click rate hits the target."""
        if self._intercept is None:
            state = self._state_at(0)
            z = self._logit_terms(state, self._draw_impressions(state)).sum(axis=1)
            self._intercept = _calibrate_intercept(z, self.config.target_click_rate)
        return self._intercept

    # ------------------------------------------------------------------ state over time

    def _state_at(self, d: int) -> _State:
        if d in self._checkpoints:
            self._checkpoints.move_to_end(d)
            return self._checkpoints[d]
        earlier = [k for k in self._checkpoints if k < d]
        state = self._checkpoints[max(earlier)] if earlier else self._initial_state()
        if not earlier:
            self._remember(state)
        while state.day < d:
            state = self._advance(state)
            if state.day % _CHECKPOINT_EVERY == 0 or state.day == d:
                self._remember(state)
        return state

    def _remember(self, state: _State) -> None:
        self._checkpoints[state.day] = state
        self._checkpoints.move_to_end(state.day)
        while len(self._checkpoints) > _MAX_CHECKPOINTS:
            self._checkpoints.popitem(last=False)

    def _initial_state(self) -> _State:
        """Day 0: prehistory events in pseudo-day blocks with their own sticky intents."""
        cfg, st = self.config, self._static
        per_block = cfg.behaviour_events_per_day
        n_blocks = math.ceil(cfg.prehistory_len / per_block)
        intent = self._draw_intent(_rng(cfg.seed, _Stream.INTENT, -n_blocks))
        block_intents = [intent]
        for step in range(-n_blocks + 1, 0):
            intent = self._switch_intent(intent, step)
            block_intents.append(intent)
        day0_intent = self._switch_intent(intent, 0)

        event_intent = np.repeat(np.stack(block_intents, axis=1), per_block, axis=1)
        event_intent = event_intent[:, -cfg.prehistory_len :]
        # Prehistory uses day-0 popularity of the initial catalogue (no simulated past drift).
        weights = self._exposure_weights(0, st.logpop0)
        events = self._behaviour_events(_Stream.PREHISTORY, 0, event_intent, weights)
        return _State(
            day=0,
            intent=day0_intent,
            logpop=st.logpop0,
            quality=st.quality0,
            history=events[:, -cfg.logged_history_len :].copy(),
            creator_counts=self._creator_counts(events),
            n_events=cfg.prehistory_len,
        )

    def _advance(self, state: _State) -> _State:
        """Start of day d -> start of day d+1: the day's behaviour events, drift, intent switches."""
        cfg = self.config
        d = state.day
        weights = self._exposure_weights(d, state.logpop)
        event_intent = np.repeat(state.intent[:, None], cfg.behaviour_events_per_day, axis=1)
        events = self._behaviour_events(_Stream.EVENTS, d, event_intent, weights)
        history = np.concatenate([state.history, events], axis=1)[:, -cfg.logged_history_len :]

        births = self.birth_days(d + 1)
        born = births <= d + 1
        pop_step = _rng(cfg.seed, _Stream.POPULARITY, d + 1).normal(0.0, cfg.popularity_drift, len(born))
        quality_step = _rng(cfg.seed, _Stream.QUALITY, d + 1).normal(
            0.0, 0.5 * cfg.popularity_drift, len(born)
        )
        logpop = state.logpop + pop_step * born
        quality = state.quality + quality_step * born
        if d + 1 >= MAX_DAYS:  # the slots recycled today start over as new items
            reborn = births == d + 1
            fresh = _rng(cfg.seed, _Stream.REBIRTH, d + 1)
            logpop = np.where(reborn, fresh.normal(-0.3, 1.0, len(born)), logpop)
            quality = np.where(reborn, fresh.normal(0.0, 0.5, len(born)), quality)
        return _State(
            day=d + 1,
            intent=self._switch_intent(state.intent, d + 1),
            logpop=logpop,
            quality=quality,
            history=history,
            creator_counts=state.creator_counts + self._creator_counts(events),
            n_events=state.n_events + cfg.behaviour_events_per_day,
        )

    def _draw_intent(self, rng: np.random.Generator) -> np.ndarray:
        """A fresh intent: half the time from long-term taste, half the time anything."""
        n_users, n_cat = self.config.n_users, self.config.n_categories
        from_taste = self._draw_preferred(np.arange(n_users), rng.random(n_users))
        anything = rng.integers(0, n_cat, n_users)
        return np.where(rng.random(n_users) < 0.5, from_taste, anything)

    def _switch_intent(self, intent: np.ndarray, step: int) -> np.ndarray:
        rng = _rng(self.config.seed, _Stream.INTENT, step)
        switch = rng.random(len(intent)) < self.config.intent_switch_prob
        return np.where(switch, self._draw_intent(rng), intent)

    def _draw_preferred(self, users: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Categories drawn from each user's long-term preference (vectorised inverse CDF)."""
        n_cat = self.config.n_categories
        flat = np.searchsorted(self._static.pref_cum, users + u, side="right")
        return np.clip(flat - users * n_cat, 0, n_cat - 1)

    def _exposure_weights(self, d: int, logpop: np.ndarray) -> np.ndarray:
        age = d - self.birth_days(d)
        fresh = 1.0 + _FRESH_EXPOSURE_BOOST * np.exp(-np.maximum(age, 0) / 2.0)
        return np.where(age >= 0, np.exp(logpop) * fresh, 0.0)

    def _behaviour_events(
        self, stream: _Stream, step: int, intent: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """(U, n) behaviour events as item ids; `intent` (U, n) gives each event's intent category.

        Users are processed in fixed-size chunks (own generator each) to bound temporary memory.
        """
        sampler = _ItemSampler.build(self._static, weights)
        n_users, n = intent.shape
        per_chunk = max(1, _EVENTS_PER_CHUNK // n)
        chunks = [
            self._event_chunk(
                _rng(self.config.seed, stream, step, part),
                sampler,
                np.arange(start, min(start + per_chunk, n_users)),
                intent[start : start + per_chunk],
            )
            for part, start in enumerate(range(0, n_users, per_chunk))
        ]
        return np.concatenate(chunks, axis=0)

    def _event_chunk(
        self, rng: np.random.Generator, sampler: _ItemSampler, users: np.ndarray, intent: np.ndarray
    ) -> np.ndarray:
        favourites = self._static.favourites
        n = intent.shape[1]
        user = np.repeat(users, n)
        size = len(user)
        channel_u = rng.random(size)
        pick_u = rng.random(size)
        taste_u = rng.random(size)
        slot = rng.integers(0, favourites.shape[1], size)
        from_favourite = channel_u < _EVENT_FAVOURITE_SHARE
        # Favourite-creator events fall back to the intent category if the creator has no live item.
        from_intent = channel_u < _EVENT_FAVOURITE_SHARE + _EVENT_INTENT_SHARE
        from_taste = ~from_intent & (channel_u < 1.0 - _EVENT_GLOBAL_SHARE)
        creator = np.where(from_favourite, favourites[user, slot], -1)
        category = np.where(from_intent, intent.ravel(), -1)
        category[from_taste] = self._draw_preferred(user[from_taste], taste_u[from_taste])
        items = sampler.draw(creator, category, pick_u)
        return (items + 1).astype(np.int32).reshape(len(users), n)

    def _creator_counts(self, events: np.ndarray) -> np.ndarray:
        return _per_user_counts(self._static.item_creator[events.astype(np.int64) - 1], self.config.n_creators)

    # ------------------------------------------------------------------ one day's impressions

    def _draw_impressions(self, state: _State) -> _Draw:
        cfg, st = self.config, self._static
        rng = _rng(cfg.seed, _Stream.IMPRESSIONS, state.day)
        n = cfg.impressions_per_day
        user = np.searchsorted(st.activity_cum, rng.random(n) * st.activity_cum[-1], side="right")
        user = np.minimum(user, cfg.n_users - 1)
        source = np.minimum(
            np.searchsorted(st.source_cum, rng.random(n), side="right"), len(st.source_cum) - 1
        )
        hour = np.minimum(np.searchsorted(st.hour_cum, rng.random(n), side="right"), N_HOURS - 1)
        micros = hour * _MICROS_PER_HOUR + rng.integers(0, _MICROS_PER_HOUR, n)

        channel_cum = np.cumsum(_CHANNEL_SHARES, axis=1)[source % 3]
        channel = (rng.random(n)[:, None] >= channel_cum[:, :-1]).sum(axis=1)
        pick_u = rng.random(n)
        preferred = self._draw_preferred(user, rng.random(n))
        history_pos = rng.integers(0, state.history.shape[1], n)
        history_creator = st.item_creator[state.history[user, history_pos].astype(np.int64) - 1]

        sampler = _ItemSampler.build(st, self._exposure_weights(state.day, state.logpop))
        creator = np.where(channel == 2, history_creator, -1)
        category = np.where(channel == 0, preferred, np.where(channel == 1, state.intent[user], -1))
        item = sampler.draw(creator, category, pick_u)

        order = np.argsort(micros, kind="stable")  # log order = event time
        return _Draw(
            user=user[order], item=item[order], source=source[order], hour=hour[order], micros=micros[order]
        )

    def _logit_terms(self, state: _State, draw: _Draw) -> np.ndarray:
        """(n, len(LOGIT_TERMS)) click-logit terms without the intercept."""
        cfg, st = self.config, self._static
        user, item, source = draw.user, draw.item, draw.source
        category = st.item_category[item]
        creator = st.item_creator[item]
        age = state.day - self.birth_days(state.day)[item]
        kind = source % 3

        category_affinity = _W_CATEGORY * np.tanh(0.6 * np.log(cfg.n_categories * st.pref[user, category]))
        intent = _SOURCE_INTENT_GAIN[kind] * (state.intent[user] == category)
        creator_share = state.creator_counts[user, creator] / state.n_events
        creator_affinity = _W_CREATOR * np.tanh(creator_share / _CREATOR_SATURATION)
        recent = state.history[:, -_FATIGUE_WINDOW:].astype(np.int64) - 1
        recent_same = (st.item_category[recent][user] == category[:, None]).sum(axis=1)
        fatigue = -_W_FATIGUE * np.maximum(recent_same - _FATIGUE_FREE, 0)
        item_appeal = _W_POPULARITY * state.logpop[item] + state.quality[item]
        freshness = _W_FRESHNESS * st.novelty[user] * np.exp(-age / _FRESHNESS_DAYS)
        hour_fit = _W_HOUR * np.cos(2 * np.pi * (draw.hour - st.hour_peak[st.segment[user]]) / N_HOURS)
        user_terms = st.user_bias[user] + _W_ACTIVITY * st.activity_log[user]
        complementarity = self._complementarity(state)[user, category]
        return np.stack(
            [
                user_terms,
                category_affinity,
                intent,
                creator_affinity,
                fatigue,
                item_appeal,
                freshness,
                hour_fit,
                _SOURCE_OFFSET[kind],
                complementarity,
            ],
            axis=1,
        )

    def _complementarity(self, state: _State) -> np.ndarray:
        """(U, C) each user's complementarity logit per candidate category: the share of every category in
        the user's logged history times M (zeros when the term is off)."""
        cfg, st = self.config, self._static
        if cfg.category_complementarity == 0.0:
            return np.zeros((cfg.n_users, cfg.n_categories))
        events = st.item_category[state.history.astype(np.int64) - 1]
        share = _per_user_counts(events, cfg.n_categories) / events.shape[1]
        return share @ st.complementarity

    def _frame(
        self, day: date, d: int, state: _State, draw: _Draw, p_true: np.ndarray, label: np.ndarray
    ) -> pl.DataFrame:
        st = self._static
        n = len(draw.user)
        observed = _rng(self.config.seed, _Stream.OBSERVED, d)
        # Observed features are noisy views of the latent state (a logged counter, not the truth).
        popularity_noise = observed.normal(0.0, 0.25, len(st.item_birth))
        activity_noise = observed.normal(0.0, 0.1, self.config.n_users)
        midnight_us = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000
        age = d - self.birth_days(d)[draw.item]
        ones = np.ones(n, dtype=np.float32)
        columns = {
            "sample_id": pl.Series(d * SAMPLE_ID_STRIDE + np.arange(n, dtype=np.int64)),
            "event_time": pl.Series(midnight_us + draw.micros.astype(np.int64)).cast(
                SAMPLE_SCHEMA["event_time"]
            ),
            "day": pl.repeat(day, n, eager=True),
            "user_id": draw.user,
            "item_id": draw.item + 1,
            "category": st.item_category[draw.item] + 1,
            "creator": st.item_creator[draw.item] + 1,
            "traffic_source": draw.source,
            "hour": draw.hour,
            "user_segment": st.segment[draw.user],
            "item_age_days": np.log1p(age),
            "item_popularity": (state.logpop[draw.item] + popularity_noise[draw.item] - _POP_SHIFT)
            / _POP_SCALE,
            "user_activity": st.activity_log[draw.user] + activity_noise[draw.user] - _ACTIVITY_SHIFT,
            "history": _history_series(state.history[draw.user]),
            "label": label,
            "r_s": ones,
            "r_pos": ones,
            "p_x": ones,
            "b_s": np.zeros(n, dtype=np.float32),
            "p_true": p_true,
        }
        frame = pl.DataFrame(columns)
        return frame.select(pl.col(name).cast(dtype) for name, dtype in SAMPLE_SCHEMA.items())


LOGIT_TERMS: tuple[str, ...] = (
    "user",
    "category_affinity",
    "intent_x_source",
    "creator_affinity",
    "fatigue",
    "item_appeal",
    "novelty_x_freshness",
    "segment_x_hour",
    "source_offset",
    "category_complementarity",
)


def _per_user_counts(groups: np.ndarray, n_groups: int) -> np.ndarray:
    """(U, n) 0-based group of each user's event -> (U, n_groups) int32 occurrences per user."""
    n_users = groups.shape[0]
    flat = np.arange(n_users)[:, None] * n_groups + groups
    return np.bincount(flat.ravel(), minlength=n_users * n_groups).reshape(n_users, n_groups).astype(np.int32)


def _history_series(history: np.ndarray) -> pl.Series:
    """(n, L) int32 -> List(Int32) column; the fixed-width Array route avoids Python objects."""
    return pl.Series("history", np.ascontiguousarray(history, dtype=np.int32)).cast(pl.List(pl.Int32))


def _calibrate_intercept(z: np.ndarray, target: float) -> float:
    """Bisection on b so that mean(sigmoid(b + z)) == target (monotone in b)."""
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _sigmoid(mid + z).mean() < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
