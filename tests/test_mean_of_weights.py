"""The one estimator of log mean exp and its delta-method standard error used by every family."""

from __future__ import annotations

import math

import numpy as np
import torch

from ppgen.models.base import mean_of_weights


def test_mean_of_weights_against_direct_computation() -> None:
    log_w = torch.tensor([[0.0, -700.0], [math.log(3.0), -699.0], [math.log(2.0), -701.0]], dtype=torch.float64)
    est, se = mean_of_weights(log_w)
    w0 = np.array([1.0, 3.0, 2.0])
    assert math.isclose(float(est[0]), math.log(w0.mean()), rel_tol=1e-12)
    assert math.isclose(float(se[0]), w0.std(ddof=1) / math.sqrt(3) / w0.mean(), rel_tol=1e-12)
    w1 = np.exp(np.array([0.0, 1.0, -1.0]))  # the second column, far below exp's range: shifted, not lost
    assert math.isclose(float(est[1]), -700.0 + math.log(w1.mean()), rel_tol=1e-12)
    assert math.isclose(float(se[1]), w1.std(ddof=1) / math.sqrt(3) / w1.mean(), rel_tol=1e-12)


def test_one_draw_is_its_own_value_with_no_error() -> None:
    est, se = mean_of_weights(torch.tensor([[-1.5, 2.0]], dtype=torch.float64))
    assert est.tolist() == [-1.5, 2.0] and se.tolist() == [0.0, 0.0]
