"""One network per class (``per: y``): the batched form against one plain MLP per class, row by row, in
value and gradient; bad labels; and the declared network reading a label among the data's batch
dimensions (enumerated classes beside the examples)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ppgen.nets.blocks import mlp
from ppgen.nets.per_class import PerClassMLP
from ppgen.program.networks import InputSpec, Network

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _separate(net: PerClassMLP) -> list[nn.Sequential]:
    """``net`` as ``K`` plain MLPs holding the same weights (views: gradients reach ``net``'s parameters)."""
    linears = [m for m in net.layers if hasattr(m, "weight")]
    acts = [m for m in net.layers if not hasattr(m, "weight")]
    out = []
    for k in range(net.classes):
        layers: list = []
        for i, lin in enumerate(linears):
            layers.append(lambda h, lin=lin, k=k: h @ lin.weight[k] + lin.bias[k, 0])
            if i < len(acts):
                layers.append(acts[i])
        out.append(layers)
    return out


def _apply(layers: list, h: torch.Tensor) -> torch.Tensor:
    for f in layers:
        h = f(h)
    return h


@pytest.mark.parametrize("sizes, labels", [
    ([5, 7, 3], [2, 0, 2, 1, 2, 0, 3]),      # class 3 once, uneven counts
    ([5, 7, 6, 3], [1, 1, 1, 1]),            # one class only, the others empty
    ([5, 3], [3, 2, 1, 0]),                  # linear, one row per class
])
def test_per_class_mlp_equals_one_mlp_per_class(sizes, labels):
    torch.manual_seed(0)
    net = PerClassMLP(4, sizes, "tanh")
    x = torch.randn(len(labels), sizes[0], requires_grad=True)
    lab = torch.tensor(labels)
    got = net(x, lab)
    nets = _separate(net)
    want = torch.stack([_apply(nets[int(c)], x[i:i + 1])[0] for i, c in enumerate(lab)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    params = [x, *net.parameters()]
    g_got = torch.autograd.grad(got.sin().sum(), params, retain_graph=True)
    g_want = torch.autograd.grad(want.sin().sum(), params)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the classes no row chose get no gradient
    unused = sorted(set(range(4)) - set(labels))
    for p in net.parameters():
        assert float(torch.autograd.grad(got.sum(), p, retain_graph=True)[0][unused].abs().sum()) == 0.0
        assert float(torch.autograd.grad(got.sum(), p, retain_graph=True)[0][sorted(set(labels))].abs().sum()) > 0.0


def test_each_class_starts_as_a_plain_layer_and_differently():
    torch.manual_seed(0)
    net = PerClassMLP(3, [100, 50, 10])
    ref = mlp([100, 50, 10])
    w, r = net.layers[0].weight.detach(), ref[0].weight.detach()
    assert w.shape == (3, 100, 50) and net.layers[0].bias.shape == (3, 1, 50)
    bound = 1 / 100 ** 0.5
    assert float(w.abs().max()) <= bound and float(r.abs().max()) <= bound
    assert abs(float(w.std()) - float(r.std())) < 0.1 * float(r.std())
    assert not torch.equal(w[0], w[1])


def test_bad_labels_and_shapes_are_errors():
    net = PerClassMLP(3, [4, 2])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values from 0 to 3"):
        net(torch.zeros(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="one label per row"):
        net(torch.zeros(2, 4), torch.tensor([0]))
    with pytest.raises(ValueError, match="at least one class"):
        PerClassMLP(0, [4, 2])
    assert net(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)).shape == (0, 2)


def test_declared_network_per_label_over_enumerated_classes():
    """A decoder of z with ``per: y``, y enumerated as (classes, 1) beside examples (6,): each (class, example)
    pair goes through its class's network, the label is not an input feature, and the heads keep the batch
    shape."""
    torch.manual_seed(1)
    net = Network("dec", "mlp", [7], "relu", [InputSpec("z", (3,)), InputSpec("y", (), classes=4, selects=True)],
                  {"loc": (2,), "scale": (2,)})
    assert net.core.layers[0].weight.shape == (4, 3, 7)  # y is not a feature
    z = torch.randn(4, 6, 3)
    y = torch.arange(4).reshape(4, 1)
    heads = net([z, y])
    assert heads["loc"].shape == (4, 6, 2)
    nets = _separate(net.core)
    for c in range(4):
        want = _apply(nets[c], z[c])
        torch.testing.assert_close(torch.cat([heads["loc"][c], heads["scale"][c]], -1), want, rtol=1e-5, atol=1e-6)
    # a label per example, the same values
    zb = z[:, 0]
    got = net([zb, torch.arange(4)])["loc"]
    torch.testing.assert_close(got, heads["loc"][:, 0], rtol=1e-5, atol=1e-6)


def test_declared_network_per_label_refuses_conv_and_non_labels():
    from ppgen.spec import SpecError

    with pytest.raises(SpecError, match=r"networks\.enc\.per: one network per class is for kinds mlp and linear"):
        Network("enc", "conv", [8], "relu", [InputSpec("x", (1, 8, 8)), InputSpec("y", (), classes=4, selects=True)],
                {"out": (2,)})
    with pytest.raises(SpecError, match=r"networks\.enc\.per: 'y' must be one Categorical label"):
        Network("enc", "mlp", [8], "relu", [InputSpec("x", (4,)), InputSpec("y", (2,), classes=4, selects=True)],
                {"out": (2,)})
