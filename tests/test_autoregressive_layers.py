"""The pieces the autoregressive image networks share (ppgen.models.autoregressive.layers): class biases and
the bias helpers against plain indexing and broadcasting, the gated unit against its formula, the caches
a stepper starts from, and every network's stepper against the plain full pass, pixel by pixel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ppgen
from ppgen.data.core import DataInfo
from ppgen.models.autoregressive.layers import ClassBias, add_bias, add_bias_last, fill_caches, gate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_class_biases_are_rows_of_one_table_split_by_layer() -> None:
    cb = ClassBias(3, [2, 4, 1])
    y = torch.tensor([2, 0, 2, 1])
    assert all(not e.any() for e in cb(y))  # a conditional model starts unconditional
    torch.manual_seed(0)
    with torch.no_grad():
        cb.table.weight.normal_()
    parts = cb(y)
    assert [p.shape for p in parts] == [(4, 2), (4, 4), (4, 1)]
    rows = cb.table.weight[y]
    assert torch.equal(parts[0], rows[:, :2]) and torch.equal(parts[1], rows[:, 2:6]) and torch.equal(parts[2], rows[:, 6:])
    with pytest.raises(ValueError, match="class-conditional: pass the labels y"):
        cb(None)
    plain = ClassBias(None, [2, 4])
    assert plain(None) == [None, None] and plain(y) == [None, None] and plain.table is None
    assert list(plain.parameters()) == []


def test_bias_helpers_broadcast_one_value_per_example_and_channel() -> None:
    torch.manual_seed(1)
    t, e = torch.randn(2, 3, 4, 5), torch.randn(2, 3)
    out = add_bias(t, e)
    for n in range(2):
        for c in range(3):
            assert torch.equal(out[n, c], t[n, c] + e[n, c])
    assert torch.equal(add_bias(torch.zeros(2, 3), e), e)  # no trailing dimensions
    last = torch.randn(2, 4, 5, 3)
    out = add_bias_last(last, e)
    for n in range(2):
        for c in range(3):
            assert torch.equal(out[n, ..., c], last[n, ..., c] + e[n, c])
    assert torch.equal(add_bias_last(torch.zeros(2, 7, 3), e), e.unsqueeze(1).expand(2, 7, 3))
    assert add_bias(t, None) is t and add_bias_last(last, None) is last


def test_gate_is_tanh_of_the_first_half_times_sigmoid_of_the_second() -> None:
    torch.manual_seed(2)
    t = torch.randn(2, 6, 3, 3)
    assert torch.allclose(gate(t), torch.tanh(t[:, :3]) * torch.sigmoid(t[:, 3:]))
    s = torch.randn(2, 3, 4)
    assert torch.allclose(gate(s, dim=-1), torch.tanh(s[..., :2]) * torch.sigmoid(s[..., 2:]))
    assert gate(t).shape == (2, 3, 3, 3)


class Recording(nn.Module):
    """A network that keeps a map and a pair of maps per pass, and records the batch of each pass."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, keep: list | None = None) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if keep is not None:
            keep.append(x * 2 + 1)
            keep.append((x[:, :, :1] - 3, (x + 0 if y is None else x + y.view(-1, 1, 1, 1))))
        return x


def test_fill_caches_from_a_full_pass_or_zero_maps_of_the_right_shapes() -> None:
    net = Recording()
    x = torch.arange(24.0).reshape(3, 1, 2, 4)
    y = torch.tensor([1.0, 2.0, 3.0])
    full = fill_caches(net, x, y, start=5)
    assert net.batches == [3]
    assert torch.equal(full[0], x * 2 + 1) and torch.equal(full[1][0], x[:, :, :1] - 3)
    assert torch.equal(full[1][1], x + y.view(-1, 1, 1, 1))
    zero = fill_caches(net, x, y, start=0)
    assert net.batches == [3, 1]  # one image finds the shapes
    assert isinstance(zero[1], tuple) and len(zero[1]) == 2
    for z, f in ((zero[0], full[0]), (zero[1][0], full[1][0]), (zero[1][1], full[1][1])):
        assert z.shape == f.shape and float(z.abs().max()) == 0.0
    assert fill_caches(net, x, None, start=0)[1][1].shape == (3, 1, 2, 4)


NETS = [
    ("pixelcnn", {"net": {"channels": 4, "first_kernel": 3, "kernel": 3, "blocks": 1, "head": 4}}),
    ("gated_pixelcnn", {"net": {"channels": 3, "first_kernel": 3, "kernel": 3, "layers": 2, "head": 4}}),
    ("pixelrnn", {"net": {"hidden": 3, "channels": 4, "first_kernel": 3, "kernel": 3, "layers": 1, "head": 4}}),
]


@pytest.mark.parametrize("family, extra", NETS, ids=[f for f, _ in NETS])
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("start", [0, 7])
def test_each_networks_stepper_gives_the_plain_passs_logits_at_every_pixel(family: str, extra: dict,
                                                                            conditional: bool, start: int) -> None:
    spec = ppgen.load_spec({"family": family, "conditional": conditional,
                            "likelihood": {"kind": "categorical", "levels": 3, "scale": 2},
                            "data": {"name": "digits", "binarize": "none"}, **extra})
    model = ppgen.build(spec, DataInfo((1, 4, 5), "continuous", num_classes=3 if conditional else None, n_train=10))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)  # the class biases too, which start at zero
    x = torch.randint(0, 3, (2, 1, 4, 5)).float() / 2
    y = torch.tensor([2, 0]) if conditional else None
    x_in = model.net_input(x)
    canvas = x_in.clone()
    canvas.view(2, -1)[:, start:] = model.net_input(torch.zeros(()))  # pixels from start are not yet final
    with torch.no_grad():
        plain = model.net(x_in, y)  # (2, 3, 4, 5): every pixel sees only the pixels before it
        stepper = model.net.stepper(canvas, y, start)
        for idx in range(start, 20):
            r, c = divmod(idx, 5)
            assert torch.allclose(stepper.logits_at(r, c), plain[:, :, r, c], atol=1e-5), (family, r, c)
            stepper.set_pixel(r, c, x_in[:, :, r, c])
