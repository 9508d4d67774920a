"""ppgen.nets.gan: the GAN's generator and discriminator networks and their spec sections -- shapes,
the output non-linearity that sets G's support, the standardized input, DCGAN's side arithmetic and
normalisation, and the messages for networks that cannot be built."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ppgen.nets.gan import (ConvDiscriminator, ConvGenerator, DiscriminatorSpec, GeneratorSpec, MLPDiscriminator,
                            MLPGenerator, build_discriminator, build_generator)
from ppgen.spec import SpecError, validate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _g(**kw: object) -> GeneratorSpec:
    return GeneratorSpec(**kw)


def _d(**kw: object) -> DiscriminatorSpec:
    return DiscriminatorSpec(**kw)


@pytest.mark.parametrize("section, data, needle", [
    (GeneratorSpec, {"kind": "conv", "hidden": []}, "generator.hidden: a conv network needs at least one stage"),
    (DiscriminatorSpec, {"kind": "conv", "hidden": []}, "discriminator.hidden: a conv network needs at least one stage"),
    (GeneratorSpec, {"hidden": [0]}, "hidden.0: Input should be greater than or equal to 1"),
    (DiscriminatorSpec, {"dropout": 1.0}, "dropout: Input should be less than 1"),
    (GeneratorSpec, {"output": "relu"}, "output: Input should be 'auto', 'sigmoid', 'tanh', 'identity' or 'softplus'"),
    (DiscriminatorSpec, {"norm": "group"}, "norm: Input should be 'none', 'batch' or 'layer'"),
])
def test_sections_refuse_what_cannot_be_built(section: type, data: dict, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        validate(section, data, "generator")
    assert needle in str(err.value)


def test_an_mlp_generator_with_no_hidden_layer_is_linear() -> None:
    g = build_generator(_g(hidden=[]), 3, (2,), "identity")
    z = torch.randn(5, 3)
    lin = g.net[0]
    assert torch.allclose(g(z), z @ lin.weight.T + lin.bias)


@pytest.mark.parametrize("output, low, high", [("sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0), ("softplus", 0.0, math.inf)])
def test_the_output_sets_the_support_of_g(output: str, low: float, high: float) -> None:
    torch.manual_seed(0)
    g = build_generator(_g(hidden=[8]), 2, (1, 3, 3), output)
    with torch.no_grad():
        g.net[-3].bias.fill_(50.0)  # push the last layer far out: the non-linearity must still bound it
        x = g(torch.randn(16, 2) * 10)
        assert x.shape == (16, 1, 3, 3)
        assert float(x.min()) >= low and float(x.max()) <= high
        g.net[-3].bias.fill_(-50.0)
        assert float(g(torch.randn(16, 2)).min()) >= low


def test_identity_output_is_unbounded() -> None:
    g = build_generator(_g(hidden=[4]), 2, (3,), "identity")
    with torch.no_grad():
        g.net[-3].bias.fill_(-50.0)
        assert float(g(torch.randn(4, 2)).max()) < -10


@pytest.mark.parametrize("make", [
    lambda moments: MLPGenerator(2, (3,), GeneratorSpec(hidden=[4]), "identity", moments),
    lambda moments: ConvGenerator(2, (1, 4, 4), GeneratorSpec(kind="conv", hidden=[4]), "identity", moments),
])
def test_the_input_is_standardized_with_the_priors_moments(make: object) -> None:
    """G with the moments (m, s) of a Uniform prior is the same network on (z - m) / s."""
    torch.manual_seed(0)
    uniform = make((0.5, 1 / math.sqrt(12)))  # type: ignore[operator]
    normal = make((0.0, 1.0))  # type: ignore[operator]
    normal.load_state_dict({**uniform.state_dict(), "standardize.loc": torch.tensor(0.0),
                            "standardize.scale": torch.tensor(1.0)})
    z = torch.rand(6, 2)
    assert torch.allclose(uniform(z), normal((z - 0.5) * math.sqrt(12)), atol=1e-6)
    # The moments are buffers: saved with the weights, not trained.
    assert {"standardize.loc", "standardize.scale"} <= uniform.state_dict().keys()
    assert all("standardize" not in name for name, _ in uniform.named_parameters())


@pytest.mark.parametrize("event, hidden, start", [
    ((1, 28, 28), [8, 4], (8, 7, 7)), ((3, 8, 8), [4, 4, 4], (4, 1, 1)), ((1, 5, 7), [4], (4, 3, 4)),
    ((2, 1, 9), [4, 4], (4, 1, 3)),
])
def test_dcgan_generator_doubles_from_the_smallest_map_and_crops_to_the_image(event: tuple, hidden: list,
                                                                              start: tuple) -> None:
    g = build_generator(_g(kind="conv", hidden=hidden, norm="batch"), 3, event, "sigmoid")
    assert isinstance(g, ConvGenerator) and g.shape0 == start
    assert g(torch.randn(2, 3)).shape == (2, *event)
    convs = [m for m in g.body if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == list(zip(hidden, [*hidden[1:], event[0]]))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.body) == len(hidden)


def test_conv_networks_need_images() -> None:
    with pytest.raises(ValueError) as err:
        build_generator(_g(kind="conv", hidden=[4]), 2, (6,), "identity")
    assert str(err.value) == "generator.kind 'conv' needs image data (C, H, W), got event shape (6,); use 'mlp'"
    with pytest.raises(ValueError) as err:
        build_discriminator(_d(kind="conv", hidden=[4]), (4, 4))
    assert str(err.value) == "discriminator.kind 'conv' needs image data (C, H, W), got event shape (4, 4); use 'mlp'"


def test_a_network_over_the_parameter_limit_is_refused_before_it_is_made() -> None:
    with pytest.raises(ValueError, match=r"^generator: kind 'mlp' with hidden \[4096, 4096\] on these data has "
                                         r"1\.81e\+08 parameters \(0\.673 GiB as float32\), more than the 1e\+08 allowed; use narrower layers$"):
        build_generator(_g(hidden=[4096, 4096]), 2, (1, 200, 200), "sigmoid")
    with pytest.raises(ValueError, match=r"^discriminator: kind 'mlp' with hidden \[8192\]"):
        build_discriminator(_d(hidden=[8192]), (1, 128, 128))


def test_mlp_discriminator_gives_one_score_per_example_with_the_layers_asked_for() -> None:
    d = build_discriminator(_d(hidden=[6, 5], norm="layer", dropout=0.25), (1, 3, 3))
    assert isinstance(d, MLPDiscriminator) and d(torch.randn(7, 1, 3, 3)).shape == (7,)
    kinds = [type(m).__name__ for m in d.net]
    assert kinds == ["Flatten", "Linear", "LayerNorm", "LeakyReLU", "Dropout", "Linear", "LayerNorm", "LeakyReLU",
                     "Dropout", "Linear"]
    assert [m.p for m in d.net if isinstance(m, nn.Dropout)] == [0.25, 0.25]
    plain = build_discriminator(_d(hidden=[6]), (4,))
    assert [type(m).__name__ for m in plain.net] == ["Flatten", "Linear", "LeakyReLU", "Linear"]


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_layer_norm_scores_each_example_alone_and_batch_norm_does_not(kind: str) -> None:
    """Why layer norm suits a gradient penalty: an example's score in training mode does not depend on the
    other examples of the batch."""
    torch.manual_seed(0)
    x = torch.randn(6, 1, 8, 8)
    for norm, alone in (("layer", True), ("batch", False)):
        d = build_discriminator(_d(kind=kind, hidden=[4, 4], norm=norm), (1, 8, 8)).train()
        with torch.no_grad():
            full, half = d(x), d(x[:3])
        assert torch.allclose(full[:3], half, atol=1e-5) is alone


def test_dcgan_discriminator_has_no_norm_on_its_first_stage_and_small_kernels_on_small_maps() -> None:
    d = build_discriminator(_d(kind="conv", hidden=[4, 8, 16], norm="batch"), (1, 16, 16))
    assert isinstance(d, ConvDiscriminator)
    layers = list(d.body)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(4, 4), (4, 4), (3, 3)]  # 16 -> 8 -> 4: the last map is under 8
    assert isinstance(layers[1], nn.LeakyReLU)  # the first stage: no batch norm (DCGAN)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in layers) == 2
    assert d.head.in_features == 16 * 2 * 2 and d(torch.randn(3, 1, 16, 16)).shape == (3,)
    layer = build_discriminator(_d(kind="conv", hidden=[4, 8], norm="layer"), (1, 5, 5))
    groups = [m for m in layer.body if isinstance(m, nn.GroupNorm)]
    assert len(groups) == 1 and groups[0].num_groups == 1 and groups[0].num_channels == 8
    assert layer(torch.randn(2, 1, 5, 5)).shape == (2,)
