"""The model language's distribution table: each entry builds the torch distribution it names, with the
event dimensions the site's shape gives, and the parameter shapes it asks for."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import constraints

from ppgen.program import dists
from ppgen.program.dists import TABLE, PixelCategorical, build, param_event_shape


@pytest.mark.parametrize("name,args,value,reference", [
    ("Normal", {"loc": 0.5, "scale": 2.0}, [0.1, -1.0, 3.0], torch.distributions.Normal(0.5, 2.0)),
    ("Laplace", {"loc": -1.0, "scale": 0.5}, [0.1, -1.0, 3.0], torch.distributions.Laplace(-1.0, 0.5)),
    ("Gamma", {"concentration": 2.0, "rate": 3.0}, [0.1, 1.0, 3.0], torch.distributions.Gamma(2.0, 3.0)),
    ("Beta", {"concentration1": 2.0, "concentration0": 5.0}, [0.1, 0.5, 0.9], torch.distributions.Beta(2.0, 5.0)),
    ("Bernoulli", {"logits": 0.3}, [0.0, 1.0, 1.0], torch.distributions.Bernoulli(logits=torch.tensor(0.3))),
    ("Poisson", {"rate": 2.5}, [0.0, 1.0, 4.0], torch.distributions.Poisson(2.5)),
])
def test_an_entry_scores_a_site_of_shape_3_as_one_value_of_the_torch_distribution(name, args, value, reference):
    entry = TABLE[name]
    tensors = {k: torch.full((3,), v) for k, v in args.items()}
    d = build(entry, tensors, (3,), {})
    x = torch.tensor(value)
    assert d.event_shape == (3,) and d.batch_shape == ()
    torch.testing.assert_close(d.log_prob(x), reference.log_prob(x).sum())


def test_studentt_defaults_and_the_discrete_flags():
    assert TABLE["StudentT"].required == ("df",)
    assert TABLE["StudentT"].defaults == {"loc": 0.0, "scale": 1.0}
    assert [n for n, e in TABLE.items() if e.enumerable] == ["Bernoulli", "Categorical", "OneHotCategorical"]
    assert not TABLE["Poisson"].enumerable and TABLE["Poisson"].discrete


def test_dirichlet_owns_its_last_dimension():
    conc = torch.tensor([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
    d = build(TABLE["Dirichlet"], {"concentration": conc}, (2, 3), {})
    assert d.event_shape == (2, 3)
    x = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    torch.testing.assert_close(d.log_prob(x), torch.distributions.Dirichlet(conc).log_prob(x).sum())


def test_public_names_leave_out_the_internal_entries():
    names = dists.public_names()
    assert "Normal" in names and "PixelCategorical" in names
    assert "ConstrainedNormal" not in names and "ConstrainedDelta" not in names


def test_describe_params_lists_required_then_alternatives():
    assert TABLE["Normal"].describe_params() == "loc, scale"
    assert TABLE["Bernoulli"].describe_params() == "probs or logits"
    assert TABLE["StudentT"].describe_params() == "df, loc, scale"


def test_param_event_shapes():
    assert param_event_shape(TABLE["Normal"], "loc", (4,), {}) == (4,)
    assert param_event_shape(TABLE["Categorical"], "logits", (2,), {"classes": 5}) == (2, 5)
    assert param_event_shape(TABLE["PixelCategorical"], "logits", (7,), {"levels": 17}) == (7, 17)
    mix = {"components": 3, "component_entry": TABLE["Normal"], "component_options": {}}
    assert param_event_shape(TABLE["MixtureSameFamily"], "logits", (2,), mix) == (3,)
    assert param_event_shape(TABLE["MixtureSameFamily"], "component.loc", (2,), mix) == (3, 2)
    # a simplex of 3 values is 2 unconstrained numbers
    assert param_event_shape(TABLE["ConstrainedNormal"], "loc", (3,), {"support": constraints.simplex}) == (2,)
    flow = {"context_dim": 6, "base_entry": TABLE["Normal"], "base_options": {}}
    assert param_event_shape(TABLE["TransformedDistribution"], "context", (2,), flow) == (6,)
    assert param_event_shape(TABLE["TransformedDistribution"], "base.scale", (2,), flow) == (2,)


def test_pixel_categorical_scores_the_level_of_each_intensity():
    logits = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, -1.0]])
    d = PixelCategorical(logits, levels=3, scale=2.0)
    x = torch.tensor([1.0, 0.0])  # levels 2 and 0
    logp = torch.log_softmax(logits, -1)
    torch.testing.assert_close(d.log_prob(x), torch.stack([logp[0, 2], logp[1, 0]]))
    torch.testing.assert_close(d.mean, (torch.softmax(logits, -1) * torch.tensor([0.0, 1.0, 2.0])).sum(-1) / 2)
    s = d.sample((50,))
    assert s.shape == (50, 2) and set((s * 2).unique().tolist()) <= {0.0, 1.0, 2.0}
    assert d.expand((4, 2)).log_prob(x).shape == (4, 2)


def test_pixel_categorical_refuses_values_off_its_grid_and_wrong_logits():
    d = PixelCategorical(torch.zeros(2, 3), levels=3, scale=2.0)
    with pytest.raises(ValueError, match="levels and scale"):
        d.log_prob(torch.tensor([0.25, 0.0]))
    with pytest.raises(ValueError, match="levels and scale"):
        d.log_prob(torch.tensor([1.5, 0.0]))  # level 3 of 3 levels
    with pytest.raises(ValueError, match="expected levels = 4"):
        PixelCategorical(torch.zeros(2, 3), levels=4, scale=3.0)


def test_pixel_site_sums_over_its_event_shape():
    logits = torch.randn(4, 5)
    d = build(TABLE["PixelCategorical"], {"logits": logits}, (4,), {"levels": 5, "scale": 4.0})
    x = torch.tensor([0.0, 0.25, 1.0, 0.5])
    expect = torch.log_softmax(logits, -1)[torch.arange(4), (x * 4).long()].sum()
    assert d.event_shape == (4,)
    torch.testing.assert_close(d.log_prob(x), expect)


def test_mixture_same_family_is_the_log_sum_of_its_weighted_components():
    logits = torch.tensor([0.2, -0.4])
    loc = torch.tensor([[0.0], [3.0]])
    scale = torch.tensor([[1.0], [0.5]])
    opts = {"components": 2, "component_entry": TABLE["Normal"], "component_options": {}}
    d = build(TABLE["MixtureSameFamily"], {"logits": logits, "component.loc": loc, "component.scale": scale}, (1,),
              opts)
    x = torch.tensor([1.0])
    w = torch.log_softmax(logits, -1)
    comp = torch.distributions.Normal(loc[:, 0], scale[:, 0]).log_prob(x)
    torch.testing.assert_close(d.log_prob(x), torch.logsumexp(w + comp, -1))


def test_constrained_normal_on_the_positive_half_line_is_a_log_normal():
    opts = {"support": constraints.positive}
    d = build(TABLE["ConstrainedNormal"], {"loc": torch.tensor([0.3]), "scale": torch.tensor([0.7])}, (1,), opts)
    x = torch.tensor([2.0])
    torch.testing.assert_close(d.log_prob(x), torch.distributions.LogNormal(0.3, 0.7).log_prob(x).sum())
    real = build(TABLE["ConstrainedNormal"], {"loc": torch.zeros(1), "scale": torch.ones(1)}, (1,),
                 {"support": constraints.real})
    torch.testing.assert_close(real.log_prob(torch.tensor([0.0])), torch.tensor(-0.5 * math.log(2 * math.pi)))


def test_constrained_delta_maps_its_unconstrained_value_into_the_support():
    d = build(TABLE["ConstrainedDelta"], {"v": torch.tensor([0.0, math.log(2.0)])}, (2,),
              {"support": constraints.positive})
    torch.testing.assert_close(d.sample(), torch.tensor([1.0, 2.0]))


def test_a_flow_without_its_layers_is_an_internal_error():
    with pytest.raises(ValueError, match="layers were not given"):
        dists.build_flow({}, (2,), {}, False, TABLE["TransformedDistribution"])


def test_one_hot_labels():
    torch.testing.assert_close(dists.one_hot_labels(torch.tensor([2, 0]), 3),
                               torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
