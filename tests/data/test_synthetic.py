"""The synthetic world: determinism, contracts, and the properties the experiments rely on."""

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from recdistill_dagster.config import SyntheticWorldConfig
from recdistill_dagster.data.schema import SAMPLE_SCHEMA, validate_samples
from recdistill_dagster.data.synthetic import MAX_DAYS, SAMPLE_ID_STRIDE, SyntheticWorld
from tests.data.helpers import auc, creator_count_in_window, history_matrix

START = date(2026, 1, 1)
TINY = SyntheticWorldConfig(
    n_users=200,
    n_items_initial=300,
    n_items_new_per_day=8,
    n_categories=8,
    n_creators=60,
    impressions_per_day=2000,
    logged_history_len=64,
)
# Big enough for statistics, with the default's ratio of creators to categories and users.
MEDIUM = SyntheticWorldConfig(
    n_users=1000,
    n_items_initial=1500,
    n_items_new_per_day=20,
    n_categories=16,
    n_creators=300,
    impressions_per_day=30000,
)


def day(i: int) -> date:
    return START + timedelta(days=i)


@pytest.fixture(scope="module")
def tiny() -> SyntheticWorld:
    return SyntheticWorld(TINY, START)


@pytest.fixture(scope="module")
def medium() -> tuple[SyntheticWorld, list[pl.DataFrame]]:
    world = SyntheticWorld(MEDIUM, START)
    return world, [world.impressions(day(i)) for i in range(2)]


# --------------------------------------------------------------------------- determinism


def test_same_config_gives_identical_frames(tiny: SyntheticWorld) -> None:
    other = SyntheticWorld(TINY, START)
    for i in range(3):
        assert tiny.impressions(day(i)).equals(other.impressions(day(i)))


def test_frames_do_not_depend_on_generation_order() -> None:
    in_order = SyntheticWorld(TINY, START)
    expected = {i: in_order.impressions(day(i)) for i in (0, 1, 2, 12, 31)}
    shuffled = SyntheticWorld(TINY, START)
    # Late days first (the intercept is calibrated on day 0 whenever it is first needed), then
    # early days after the checkpoint cache has moved on, then a late one again.
    for i in (31, 12, 2, 0, 1, 31):
        assert shuffled.impressions(day(i)).equals(expected[i]), f"day {i} differs"


def test_different_seed_gives_a_different_world() -> None:
    a = SyntheticWorld(TINY, START).impressions(day(0))
    b = SyntheticWorld(TINY.model_copy(update={"seed": TINY.seed + 1}), START).impressions(day(0))
    assert not a.equals(b)


# --------------------------------------------------------------------------- contracts


def test_frame_matches_sample_schema(tiny: SyntheticWorld) -> None:
    frame = tiny.impressions(day(1))
    validate_samples(frame, table="synthetic", partition=str(day(1)))
    assert list(frame.schema.items()) == list(SAMPLE_SCHEMA.items())
    assert frame.height == TINY.impressions_per_day
    unsampled = frame.select(
        (pl.col("r_s") == 1).all(), (pl.col("r_pos") == 1).all(), (pl.col("p_x") == 1).all(),
        (pl.col("b_s") == 0).all(), pl.col("p_true").is_between(0, 1, closed="none").all(),
        (pl.col("day") == day(1)).all(),
    ).row(0)  # fmt: skip
    assert all(unsampled)


def test_event_time_is_within_the_day_and_matches_hour(tiny: SyntheticWorld) -> None:
    frame = tiny.impressions(day(2))
    assert (frame["event_time"].dt.date() == day(2)).all()
    assert (frame["event_time"].dt.hour().cast(pl.Int32) == frame["hour"]).all()
    assert frame["event_time"].is_sorted()


def test_sample_ids_are_unique_across_days(tiny: SyntheticWorld) -> None:
    frames = [tiny.impressions(day(i)) for i in range(3)]
    ids = pl.concat([f["sample_id"] for f in frames])
    assert ids.n_unique() == ids.len()
    assert frames[2]["sample_id"].min() == 2 * SAMPLE_ID_STRIDE


def test_days_before_the_world_are_rejected(tiny: SyntheticWorld) -> None:
    with pytest.raises(ValueError, match="before the synthetic world's start date"):
        tiny.impressions(day(-1))


def test_any_later_day_exists_the_item_ids_are_recycled(tiny: SyntheticWorld) -> None:
    """An open-ended calendar: past the vocabulary's room for births, a day's new items take the ids of the
    ones born MAX_DAYS days earlier; every earlier day is untouched (the other tests pin those)."""
    late = MAX_DAYS + 3
    frame = tiny.impressions(day(late))
    validate_samples(frame, table="impressions", partition=day(late).isoformat())
    vocab = tiny.vocab()
    assert frame["item_id"].max() < vocab.n_items and frame["sample_id"].min() == late * SAMPLE_ID_STRIDE
    births = tiny.birth_days(late)
    assert births.max() == late and (births <= late).all()  # every slot holds a born item
    reborn = np.flatnonzero(births == late)  # today's new items: the slots of day 3's, age 0
    assert len(reborn) == TINY.n_items_new_per_day
    assert (tiny.birth_days(3)[reborn] == 3).all()
    np.testing.assert_array_equal(tiny.birth_days(MAX_DAYS - 1), tiny.birth_days(0))  # static until then
    assert SyntheticWorld(TINY, START).impressions(day(late)).equals(frame)  # still deterministic


def test_vocab_covers_every_id(tiny: SyntheticWorld) -> None:
    vocab = tiny.vocab()
    frame = tiny.impressions(day(3))
    assert vocab.n_items == 1 + TINY.n_items_initial + TINY.n_items_new_per_day * MAX_DAYS
    assert vocab.item_category.shape == vocab.item_creator.shape == (vocab.n_items,)
    assert vocab.item_category[0] == 0 and vocab.item_creator[0] == 0  # padding item
    assert vocab.n_hours == 24 and vocab.n_traffic_sources == 3
    for feature in ("user_id", "item_id", "category", "creator", "traffic_source", "hour", "user_segment"):
        assert frame[feature].min() >= 0 and frame[feature].max() < vocab.size_of(feature), feature
    item = frame["item_id"].to_numpy()
    assert (vocab.item_category[item] == frame["category"].to_numpy()).all()
    assert (vocab.item_creator[item] == frame["creator"].to_numpy()).all()
    history = history_matrix(frame)
    assert history.min() >= 1 and history.max() < vocab.n_items


# --------------------------------------------------------------------------- world dynamics


def test_history_is_long_and_rolls_newest_last(tiny: SyntheticWorld) -> None:
    assert tiny.behaviour_events_before(day(0)) == TINY.prehistory_len >= 1000
    assert tiny.behaviour_events_before(day(3)) == 1000 + 3 * TINY.behaviour_events_per_day
    today, tomorrow = tiny.impressions(day(1)), tiny.impressions(day(2))
    assert (today["history"].list.len() == TINY.logged_history_len).all()
    first = pl.col("history").first()
    both = (
        today.group_by("user_id")
        .agg(first)
        .join(tomorrow.group_by("user_id").agg(first), on="user_id", suffix="_next")
    )
    assert both.height > 50
    k = TINY.behaviour_events_per_day
    old, new = np.stack(both["history"].to_numpy()), np.stack(both["history_next"].to_numpy())
    # One day later the window has shifted by exactly that day's events, appended at the end.
    assert (new[:, :-k] == old[:, k:]).all()
    # Every row of a user on a day carries the same (start-of-day) history.
    per_user = today.group_by("user_id").agg(pl.col("history").n_unique().alias("n"))
    assert (per_user["n"] == 1).all()


def test_new_items_are_born_every_day_and_never_shown_early(tiny: SyntheticWorld) -> None:
    for i in range(4):
        frame = tiny.impressions(day(i))
        birth = (frame["item_id"].to_numpy() - 1 - TINY.n_items_initial) // TINY.n_items_new_per_day
        is_new = frame["item_id"].to_numpy() > TINY.n_items_initial
        assert birth[is_new].max() == i, f"no item born on day {i} was impressed"
        newborn = birth == i
        assert (frame["item_age_days"].to_numpy()[newborn & is_new] == 0).all()
        assert (frame["item_age_days"].to_numpy()[~newborn | ~is_new] > 0).all()


def test_intents_are_sticky_and_switch_at_the_configured_rate() -> None:
    def changed(prob: float) -> float:
        world = SyntheticWorld(TINY.model_copy(update={"intent_switch_prob": prob}), START)
        return float((world._state_at(1).intent != world._state_at(2).intent).mean())

    assert changed(0.0) == 0.0
    assert 0.3 < changed(0.5) < 0.5  # a switch can redraw the same category
    assert changed(1.0) > 0.6


def test_item_popularity_drifts_between_days() -> None:
    def share_shift(drift: float, gap: int) -> float:
        config = MEDIUM.model_copy(update={"popularity_drift": drift, "n_items_new_per_day": 0})
        world = SyntheticWorld(config, START)
        shares = [
            np.bincount(world.impressions(day(i))["item_id"].to_numpy(), minlength=world.n_items)
            / config.impressions_per_day
            for i in (0, gap)
        ]
        return 0.5 * float(np.abs(shares[0] - shares[1]).sum())  # total-variation distance

    static, drifting = share_shift(0.0, 5), share_shift(0.15, 5)
    assert drifting > static + 0.04, (static, drifting)
    assert share_shift(0.15, 1) < drifting  # the walk wanders further with time


# --------------------------------------------------------------------------- click model


def test_base_rate_and_bayes_auc(medium: tuple[SyntheticWorld, list[pl.DataFrame]]) -> None:
    _, frames = medium
    frame = pl.concat(frames)
    rate = frame["label"].cast(pl.Float64).mean()
    assert 0.01 <= rate <= 0.10
    assert rate == pytest.approx(MEDIUM.target_click_rate, rel=0.25)
    # The intercept is calibrated on day 0's p_true exactly.
    assert frames[0]["p_true"].cast(pl.Float64).mean() == pytest.approx(MEDIUM.target_click_rate, rel=1e-3)
    bayes = auc(frame["p_true"], frame["label"])
    assert 0.75 < bayes < 0.92, bayes


def test_long_history_tail_carries_signal_a_short_window_misses(
    medium: tuple[SyntheticWorld, list[pl.DataFrame]],
) -> None:
    world, (train, test) = medium
    vocab = world.vocab()

    def lookup_auc(window: int) -> float:
        # CTR per creator-count bucket, fit on day 0 and scored on day 1.
        counts = [np.minimum(creator_count_in_window(f, vocab, window), 30) for f in (train, test)]
        table = pl.DataFrame({"c": counts[0], "y": train["label"]}).group_by("c").agg(pl.col("y").mean())
        rates = dict(zip(table["c"].to_list(), table["y"].to_list(), strict=True))
        prediction = np.array([rates.get(c, MEDIUM.target_click_rate) for c in counts[1]])
        return auc(prediction, test["label"])

    short, long = lookup_auc(20), lookup_auc(256)
    assert long > short + 0.05, (short, long)
    # The long window also tracks the true creator-affinity term much better.
    term = world.logit_terms(day(1))["creator_affinity"].to_numpy()
    corr = [np.corrcoef(creator_count_in_window(test, vocab, w), term)[0, 1] for w in (20, 256)]
    assert corr[1] > corr[0] + 0.2, corr


def test_click_probability_has_interactions_and_non_monotone_effects(
    medium: tuple[SyntheticWorld, list[pl.DataFrame]],
) -> None:
    world, frames = medium
    frame = pl.concat(frames)
    terms = pl.concat([world.logit_terms(day(i)) for i in range(2)])
    assert (terms["sample_id"] == frame["sample_id"]).all()

    # Intent x traffic source: the same (hidden) intent match lifts clicks far more in search.
    match = terms["intent_x_source"].to_numpy() > 0
    source, label = frame["traffic_source"].to_numpy(), frame["label"].to_numpy()

    def lift(s: int) -> float:
        hit, miss = label[(source == s) & match].mean(), label[(source == s) & ~match].mean()
        return float(np.log(hit / (1 - hit)) - np.log(miss / (1 - miss)))

    assert lift(1) > lift(2) + 0.4, (lift(1), lift(2))

    # Category seen in the last 10 events: affinity raises CTR, fatigue lowers it again (inverted U),
    # which no monotone (e.g. additive-linear) use of the count can express.
    vocab = world.vocab()
    recent = vocab.item_category[history_matrix(frame)[:, -10:]] == frame["category"].to_numpy()[:, None]
    by_count = (
        pl.DataFrame({"n": np.minimum(recent.sum(axis=1), 7), "y": label})
        .group_by("n").agg(pl.col("y").mean()).sort("n")["y"].to_numpy()
    )  # fmt: skip
    peak = int(np.argmax(by_count))
    assert 1 <= peak <= 5 and by_count[peak] > 1.5 * by_count[0] and by_count[-1] < 0.7 * by_count[peak]


def test_dense_features_are_finite_and_roughly_standardized(
    medium: tuple[SyntheticWorld, list[pl.DataFrame]],
) -> None:
    frame = pl.concat(medium[1])
    for column in ("item_popularity", "user_activity"):
        values = frame[column].cast(pl.Float64)
        assert values.is_finite().all()
        assert abs(values.mean()) < 0.5 and 0.6 < values.std() < 1.5, column  # type: ignore[operator]
    assert frame["item_age_days"].min() >= 0 and frame["item_age_days"].is_finite().all()
    assert frame["user_segment"].n_unique() == MEDIUM.n_segments


def test_default_config_day_smoke() -> None:
    world = SyntheticWorld(SyntheticWorldConfig(), START)
    frame = world.impressions(day(0))
    validate_samples(frame, table="synthetic", partition="default")
    assert frame.height == 60_000
    assert world.behaviour_events_before(day(0)) >= 1000
    assert (frame["history"].list.len() == 256).all()
    assert 0.01 <= frame["label"].cast(pl.Float64).mean() <= 0.10


def test_category_complementarity_is_a_full_rank_term_read_from_the_logged_history(tiny: SyntheticWorld) -> None:
    # Off by default: a zero column, and turning it on changes no other draw (its own random stream).
    assert (tiny.logit_terms(day(2))["category_complementarity"] == 0.0).all()
    world = SyntheticWorld(TINY.model_copy(update={"category_complementarity": 2.0}), START)
    frame, terms = world.impressions(day(2)), world.logit_terms(day(2))
    plain = tiny.impressions(day(2))
    assert frame.drop("p_true", "label").equals(plain.drop("p_true", "label"))
    assert not frame["p_true"].equals(plain["p_true"])

    # The term is what a model can compute from the row itself: the mean over its `history` column of
    # M[event category, candidate category] (categories are 1-based in frames).
    interaction = world._static.complementarity
    vocab = world.vocab()
    events = vocab.item_category[history_matrix(frame)] - 1
    expected = interaction[events, frame["category"].to_numpy()[:, None] - 1].mean(axis=1)
    np.testing.assert_allclose(terms["category_complementarity"].to_numpy(), expected, rtol=1e-9, atol=1e-12)
    # Full rank: no category pair's effect is a sum of a history part and a candidate part.
    assert np.linalg.matrix_rank(interaction) == TINY.n_categories
    np.testing.assert_allclose(interaction.std(), 2.0, rtol=0.25)
