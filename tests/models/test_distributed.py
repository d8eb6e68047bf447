"""How a global batch is split over ranks (the torchrun run itself is in tests/integrations)."""

import itertools

import pytest

from models.distributed import shard_bounds


@pytest.mark.parametrize(("rows", "world"), [(512, 2), (7, 2), (1, 2), (10, 3), (0, 2), (5, 8)])
def test_shards_cover_the_batch_in_order_without_overlap(rows: int, world: int) -> None:
    bounds = [shard_bounds(rows, world, rank) for rank in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(end == next_start for (_, end), (next_start, _) in itertools.pairwise(bounds))
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)  # rank 0 is the widest
