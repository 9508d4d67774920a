"""The data-driven starts (ppgen.models.bayesian.kmeans) against known clusters: the cluster means exactly,
sorted by their first coordinate, and the best of several seedings where one seeding alone traps Lloyd's
iterations in a worse partition."""

from __future__ import annotations

import pytest
import torch

from ppgen.models.bayesian.kmeans import kmeans

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inertia(x: torch.Tensor, centres: torch.Tensor) -> float:
    return float((torch.cdist(x, centres).min(1).values ** 2).sum())


def test_separated_clusters_give_their_means_sorted_and_each_point_its_cluster() -> None:
    centres = torch.tensor([[10.0, -3.0], [0.0, 0.0], [20.0, 4.0]], dtype=torch.float64)
    offsets = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    x = (centres[:, None, :] + offsets[None]).reshape(-1, 2)  # four points around each centre, mean the centre
    cluster = torch.arange(3).repeat_interleave(4)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    found, label = kmeans(x[perm].float(), 3, torch.Generator().manual_seed(0))
    order = torch.argsort(centres[:, 0])  # the centres come back sorted by the first coordinate
    assert found.dtype == torch.float64
    assert torch.allclose(found, centres[order], rtol=0, atol=1e-12)
    rank = torch.empty(3, dtype=torch.long)
    rank[order] = torch.arange(3)
    assert torch.equal(label, rank[cluster[perm]])


def test_the_best_of_the_restarts_escapes_a_seeding_that_traps_lloyd() -> None:
    g = torch.Generator().manual_seed(0)
    corners = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]], dtype=torch.float64)
    x = (corners[:, None, :] + 0.5 * torch.randn(4, 25, 2, generator=g, dtype=torch.float64)).reshape(-1, 2)
    cluster = torch.arange(4).repeat_interleave(25)
    means = torch.stack([x[cluster == j].mean(0) for j in range(4)])
    best = _inertia(x, means)
    trapped = 0
    for seed in range(60):
        one, _ = kmeans(x, 4, torch.Generator().manual_seed(seed), restarts=1)
        trapped += _inertia(x, one) > 2 * best
        found, label = kmeans(x, 4, torch.Generator().manual_seed(seed))  # ten seedings, the first as above
        assert _inertia(x, found) == pytest.approx(best, rel=1e-12)
        for j in range(4):  # every cluster one label, each a different one
            assert bool((label[cluster == j] == label[cluster == j][0]).all())
        assert len({int(label[cluster == j][0]) for j in range(4)}) == 4
    assert trapped >= 1  # one seeding alone can put two centres in one cluster, which Lloyd cannot undo
