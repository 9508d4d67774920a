"""Network specs and builders (ppgen.nets.blocks): bounds on widths, the parameter count checked before anything
is allocated, conv stages that fit the images, and networks that compute what they say."""

from __future__ import annotations

import math

import pytest
import torch

from ppgen.nets import blocks as nets
from ppgen.nets.blocks import MAX_PARAMETERS, NetSpec, build_decoder, build_encoder
from ppgen.registry import load_spec
from ppgen.spec import SpecError


@pytest.mark.parametrize("hidden, needle", [([0], "greater than or equal to 1"), ([-3], "greater than or equal to 1"),
                                            ([1_000_000_000], "less than or equal to 65536"),
                                            ([True], "not a boolean"), ([4] * 65, "at most 64")])
def test_widths_are_bounded(hidden: list, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        NetSpec(hidden=hidden)


def test_kind_linear_takes_no_hidden_and_conv_needs_a_stage() -> None:
    assert NetSpec(kind="linear").hidden == [400]  # the default, as a resolved spec writes it
    with pytest.raises(ValueError, match="hidden does not apply to kind 'linear'"):
        NetSpec(kind="linear", hidden=[3])
    with pytest.raises(ValueError, match="activation does not apply"):
        NetSpec(kind="linear", activation="tanh")
    with pytest.raises(ValueError, match="at least one stage"):
        NetSpec(kind="conv", hidden=[])


def test_the_parameter_count_is_checked_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec({"family": "vae", "encoder": {"hidden": [60_000, 60_000]}}).encoder
    with pytest.raises(ValueError, match=r"^encoder: kind 'mlp' with hidden \[60000, 60000\] on these data has 3.6.e\+09"):
        build_encoder(spec, (1, 28, 28), 4)
    # Just at the bound is fine: 784*h + h + h*4 + 4 parameters.
    h = 50
    n = 784 * h + h + h * 4 + 4
    monkeypatch.setattr(nets, "MAX_PARAMETERS", n)
    net = build_encoder(NetSpec(hidden=[h]), (1, 28, 28), 4)
    assert sum(p.numel() for p in net.parameters()) == n
    monkeypatch.setattr(nets, "MAX_PARAMETERS", n - 1)
    with pytest.raises(ValueError, match="parameters"):
        build_encoder(NetSpec(hidden=[h]), (1, 28, 28), 4)
    assert MAX_PARAMETERS == 100_000_000


def test_counting_draws_no_random_numbers() -> None:
    """The count is made on the meta device: the weights built afterwards are those of a plain build."""
    torch.manual_seed(0)
    a = build_decoder(NetSpec(hidden=[16]), 3, (1, 8, 8))
    torch.manual_seed(0)
    b = nets._decoder(NetSpec(hidden=[16]), 3, (1, 8, 8), 1)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("shape, stages, ok", [((1, 12, 1), 1, False), ((1, 1, 12), 1, True), ((1, 8, 8), 5, True),
                                               ((1, 28, 28), 3, True), ((1, 12, 2), 2, True), ((1, 16, 1), 1, False)])
def test_conv_encoder_needs_room_for_its_kernels(shape: tuple, stages: int, ok: bool) -> None:
    spec = load_spec({"family": "vae", "encoder": {"kind": "conv", "hidden": [4] * stages}}).encoder
    if not ok:
        with pytest.raises(ValueError, match=rf"encoder.hidden .*{shape[1]}x{shape[2]} map, too small for its 4x4 kernel"):
            build_encoder(spec, shape, 2)
        return
    net = build_encoder(spec, shape, 2)
    assert net(torch.zeros(3, *shape)).shape == (3, 2)


def test_conv_needs_images() -> None:
    spec = load_spec({"family": "vae", "decoder": {"kind": "conv", "hidden": [4]}}).decoder
    with pytest.raises(ValueError, match=r"decoder.kind 'conv' needs image data \(C, H, W\), got examples of shape \(6,\)"):
        build_decoder(spec, 2, (6,))


def test_sections_know_their_key() -> None:
    spec = load_spec({"family": "vae"})
    assert nets.key_of(spec.encoder) == "encoder" and nets.key_of(spec.decoder) == "decoder"
    assert nets.key_of(NetSpec(), "the network") == "the network"


def test_mlp_widths_are_the_spec_s() -> None:
    net = build_encoder(NetSpec(hidden=[7, 5]), (2, 3), 4)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6, 7), (7, 5), (5, 4)]
    assert math.prod(net(torch.zeros(2, 2, 3)).shape) == 8


def test_a_family_refuses_an_oversized_network_with_exit_2_message() -> None:
    import ppgen

    with pytest.raises(SpecError, match=r"vae: encoder: kind 'mlp' with hidden \[65536, 65536\]"):
        ppgen.build({"family": "vae", "data": {"name": "digits"}, "encoder": {"hidden": [65536, 65536]}})
