"""PixelRNN (Row LSTM) against exact answers: its receptive field from autograd equals the triangle
that the recurrence defines (and has no leak), the row recursion equals an LSTM cell run by hand, and a
fit through ppgen.fit gives an exact test NLL. Probabilities summing to one, the chain rule, the fused
loss against Pyro and the fast sampler against the plain one run on it in tests/test_pixelcnn.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import ppgen
from ppgen.evaluation.evaluate import evaluate
from ppgen.models.autoregressive.masked import raster_mask
from ppgen.models.autoregressive.pixelrnn import PixelRNN
from test_pixelcnn import conv_reach, dependencies, make


def row_lstm_expected(shape: tuple[int, int], first_kernel: int, kernel: int, layers: int) -> torch.Tensor:
    """The Row LSTM's receptive field by its recursion: layer l's state at (r, c) reads the layer input
    at (r, c - k//2 .. c) (mask B along the row) and its own state at (r - 1, c - k//2 .. c + k//2);
    each layer's output is added to its input (residual)."""
    h, w = shape
    p = kernel // 2
    field: dict[tuple[int, int], set[tuple[int, int]]] = {
        (r, c): conv_reach({(r, c)}, raster_mask(first_kernel, first_kernel, False), shape) for r in range(h) for c in range(w)
    }
    for _ in range(layers):
        state: dict[tuple[int, int], set[tuple[int, int]]] = {}
        for r in range(h):
            for c in range(w):
                s: set[tuple[int, int]] = set()
                for cc in range(max(0, c - p), c + 1):
                    s |= field[(r, cc)]
                if r > 0:
                    for cc in range(max(0, c - p), min(w, c + p + 1)):
                        s |= state[(r - 1, cc)]
                state[(r, c)] = s
        field = {pos: field[pos] | state[pos] for pos in field}
    dep = torch.zeros(h * w, h * w, dtype=torch.bool)
    for (r, c), s in field.items():
        for rr, cc in s:
            dep[r * w + c, rr * w + cc] = True
    return dep


def test_row_lstm_field_is_the_triangle_of_its_recursion() -> None:
    shape = (5, 7)
    model = make("pixelrnn", shape, net={"channels": 6, "hidden": 3, "first_kernel": 3, "kernel": 3, "layers": 2, "head": 8})
    dep = dependencies(model.net, shape)
    n = shape[0] * shape[1]
    assert not torch.triu(dep).any(), "output i depends on pixel i or a later one"
    assert torch.equal(dep, row_lstm_expected(shape, 3, 3, 2))
    # The triangle misses context: pixel (4, 0) does not see the far right of the row above.
    before = torch.tril(torch.ones(n, n, dtype=torch.bool), -1)
    assert (before & ~dep).any()
    assert not dep[4 * 7 + 0, 3 * 7 + 6] and dep[4 * 7 + 0, 3 * 7 + 1]


def test_row_recursion_is_an_lstm_over_rows() -> None:
    """One layer computed by hand: gates = K_is * z_r + K_ss * h_{r-1}, then the LSTM cell update, with
    the 1 x k convolutions written as explicit sums over taps."""
    model = make("pixelrnn", (3, 4), net={"channels": 2, "hidden": 2, "first_kernel": 3, "kernel": 3, "layers": 1, "head": 4}, std=0.5)
    net = model.net
    layer = net.layers[0]
    x_in = torch.randn(2, 1, 3, 4)
    with torch.no_grad():
        z = net.first(x_in)
        wi = layer.i2s.weight[:, :, 0, :]  # (4h, C, 3): taps c-1, c, c+1 (the last masked)
        ws = layer.s2s.weight  # (4h, h, 3)
        h_prev = torch.zeros(2, 2, 4)
        c_prev = torch.zeros(2, 2, 4)
        h_map = torch.zeros(2, 2, 3, 4)
        for r in range(3):
            h_row, c_row = torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)
            for c in range(4):
                g = layer.i2s.bias + layer.s2s.bias
                for t in range(3):
                    cc = c + t - 1
                    if 0 <= cc < 4:
                        if t < 2:
                            g = g + z[:, :, r, cc] @ wi[:, :, t].T
                        g = g + h_prev[:, :, cc] @ ws[:, :, t].T
                o, f, i, gg = g.chunk(4, 1)
                c_row[:, :, c] = torch.sigmoid(f) * c_prev[:, :, c] + torch.sigmoid(i) * torch.tanh(gg)
                h_row[:, :, c] = torch.sigmoid(o) * torch.tanh(c_row[:, :, c])
            h_map[:, :, r] = h_row
            h_prev, c_prev = h_row, c_row
        keep: list = []
        net(x_in, None, keep=keep)
    torch.testing.assert_close(keep[0][1], h_map, atol=1e-6, rtol=1e-5)


def test_fit_through_ppgen_gives_an_exact_nll(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # Vertical bars: every row repeats the first, which a Row LSTM can learn from the row above.
    first = rng.random((160, 1, 5)) < 0.4
    x = np.repeat(first, 5, axis=1).astype(np.float32)
    path = tmp_path / "bars.npz"
    np.savez(path, x=x)
    spec = {"family": "pixelrnn", "data": {"name": "npz", "path": str(path), "binarize": "static", "batch_size": 16},
            "net": {"channels": 8, "hidden": 4, "first_kernel": 3, "kernel": 3, "layers": 1, "head": 8}}
    run = ppgen.fit(spec, {"routine": "svi", "elbo": "trace", "epochs": 10, "optimizer": {"lr": 0.02}},
                    out=tmp_path / "run", progress=False)
    assert isinstance(run.model, PixelRNN)
    res = evaluate(run)
    assert res["test_nll_mc_stderr"] == 0.0
    # The first row carries 5 * H(0.4) = 3.37 nats; the other four rows are copies (0 nats at best).
    entropy = 5 * -(0.4 * math.log(0.4) + 0.6 * math.log(0.6))
    assert res["test_nll_nats"] < entropy + 1.0, res  # independent pixels would need 17.3 nats
    samples = run.model.sample(50)
    assert (samples[:, :, 1:] == samples[:, :, :1]).float().mean() > 0.9  # it learned to copy rows


@pytest.mark.parametrize("zoo", ["models/pixelcnn.yaml", "models/gated_pixelcnn.yaml", "models/pixelrnn.yaml"])
def test_zoo_specs_build_for_mnist(zoo: str) -> None:
    from ppgen.data.core import DataInfo

    spec = ppgen.load_spec(Path(__file__).parents[1] / zoo)
    model = ppgen.build(spec, DataInfo((1, 28, 28), "binary", 10))
    assert model.kind == "bernoulli" and model.net(torch.zeros(1, 1, 28, 28)).shape == (1, 1, 28, 28)
    spec8 = ppgen.load_spec(Path(__file__).parents[1] / zoo, ["data.binarize=none", "conditional=true"])
    model8 = ppgen.build(spec8, DataInfo((1, 28, 28), "continuous", 10))
    assert (model8.levels, model8.scale, model8.num_classes) == (256, 256.0, 10)
