"""Independent draws laid out as ArviZ's (chain, draw): in the order drawn, one chain when they do not split."""

from __future__ import annotations

import numpy as np

from ppgen.program.chains import CHAINS, arrange


def test_draws_split_into_equal_chains_in_the_order_drawn():
    draws = np.arange(24).reshape(12, 2)
    out = arrange(draws, chains=3)
    assert out.shape == (3, 4, 2)
    np.testing.assert_array_equal(out[1, 0], [8, 9])  # chain 1 starts at draw 4
    np.testing.assert_array_equal(out[2, 3], [22, 23])
    assert CHAINS == 4 and arrange(np.zeros((200, 5))).shape == (4, 50, 5)


def test_one_chain_when_the_draws_do_not_split_evenly_or_are_too_few():
    assert arrange(np.arange(10), chains=4).shape == (1, 10)
    assert arrange(np.arange(4), chains=4).shape == (1, 4)  # fewer than two draws per chain
    assert arrange(np.arange(8), chains=4).shape == (4, 2)
    assert arrange(np.arange(8), chains=0).shape == (1, 8)
