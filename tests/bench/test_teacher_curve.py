"""The teacher scaling curve: points train through the calendar, score the same rows, and pair."""

from pathlib import Path

import polars as pl
import pytest

from bench.teacher_curve import Point, markdown, summarize, train_point


def test_points_score_the_same_rows_and_pair_against_the_reference(tmp_path: Path) -> None:
    points = [Point("S", 2000, 0, "tiny"), Point("XS", 2000, 0, "tiny"), Point("XS", 3000, 0, "tiny"),
              Point("XS", 3000, 0, "tiny", batch_epochs=1)]
    files = {p: train_point(p, tmp_path) for p in points}
    config = points[0].config()
    frame = pl.read_parquet(files[points[0]])
    # One report day per training day: the model after day d scored on the unsampled day d+1.
    assert frame["report_day"].n_unique() == len(config.calendar.training_days())
    assert frame.height == 2000 * len(config.calendar.training_days())
    assert frame["teacher"].is_between(0.0, 1.0).all()
    assert train_point(points[0], tmp_path) == files[points[0]]  # reused, not re-trained
    # Fewer batch-phase epochs: another point (another file, another model), same rows.
    one_epoch = pl.read_parquet(files[points[3]])
    assert files[points[3]] != files[points[2]] and points[3].name == "XS×1ep"
    assert one_epoch["sample_id"].equals(pl.read_parquet(files[points[2]])["sample_id"])
    assert not one_epoch["teacher"].equals(pl.read_parquet(files[points[2]])["teacher"])

    summary = summarize(points, files, n_boot=50)
    small, large = summary["volumes"]
    assert [small["impressions_per_day"], large["impressions_per_day"]] == [2000, 3000]
    xs, s = small["sizes"]  # ordered by parameters
    assert (xs["size"], s["size"]) == ("XS", "S") and xs["parameters"] < s["parameters"]
    assert len(xs["auc_per_day"]) == len(config.calendar.training_days())
    assert {r["size"]: r["batch_epochs"] for r in large["sizes"]} == {
        "XS": config.teacher.optim.batch_phase_epochs, "XS×1ep": 1}
    # No L point here: nothing to pair with; with S as the reference the difference is paired.
    assert xs["vs_reference"] is None
    paired = summarize(points, files, n_boot=50, reference="S")["volumes"][0]["sizes"][0]["vs_reference"]
    assert paired["value"] == pytest.approx(xs["auc"] - s["auc"])
    assert paired["ci"][0] <= paired["value"] <= paired["ci"][1]
    text = markdown({"generated_at": "now", "command": "test", "profile": "tiny", "world": 7, "wall_seconds": 1.0,
                     **summary})
    assert "2,000 impressions a day" in text and "| XS |" in text and "| XS×1ep |" in text


def test_a_point_on_the_capacity_world_is_another_point() -> None:
    plain, capacity = Point("XS", 2000, 0, "tiny"), Point("XS", 2000, 0, "tiny", complementarity=2.0)
    assert capacity.config().data.category_complementarity == 2.0
    assert plain.config().data.category_complementarity == 0.0
    assert "category_complementarity" not in plain.overrides()["data"]  # the profile's world, unchanged
    # On the benchmark's profile (the term at 3) an explicit 0 is the earlier world, None the profile's.
    assert Point("XS", 2000, 0, "bench").config().data.category_complementarity == 3.0
    assert Point("XS", 2000, 0, "bench", complementarity=0.0).config().data.category_complementarity == 0.0
    assert capacity.key() != plain.key()
    reseeded = Point("XS", 2000, 0, "tiny", teacher_seed=5)
    assert reseeded.config().teacher.seed == 5 and reseeded.key() != plain.key()
    text = markdown({"generated_at": "now", "command": "test", "profile": "tiny", "world": 7, "wall_seconds": 1.0,
                     "category_complementarity": 2.0, "reference": "L", "volumes": []})
    assert "category x category term at scale 2" in text
