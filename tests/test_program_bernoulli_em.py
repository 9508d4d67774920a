"""EM's steps for a mixture of Bernoulli vectors: responsibilities and log-likelihood against a hand
computation, the M-step's Dirichlet and Beta modes, the prior's check, the start and the log prior."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Beta, Dirichlet

from ppgen.program.bernoulli_em import BernoulliMixtureEM
from ppgen.program.mixture_form import Block, MixtureForm
from ppgen.spec import SpecError


def _form(c: float = 2.0, a: float = 2.0, b: float = 3.0, flat: bool = False, k: int = 2, d: int = 2) -> MixtureForm:
    kind = "param" if flat else "site"
    blocks = {"weights": Block("weights", "w", kind, () if flat else (c,)),
              "probs": Block("probs", "p", kind, () if flat else (a, b))}
    return MixtureForm(k, d, None, blocks, "c", "x", emission="bernoulli")


THETA = {"weights": torch.tensor([[0.25, 0.75]], dtype=torch.float64),
         "probs": torch.tensor([[[0.9, 0.2], [0.4, 0.5]]], dtype=torch.float64)}
X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)


def _by_hand():
    w, p = [0.25, 0.75], [[0.9, 0.2], [0.4, 0.5]]
    resp, ll = [], 0.0
    for x in X.tolist():
        joint = [w[k] * math.prod(p[k][d] if x[d] else 1 - p[k][d] for d in range(2)) for k in range(2)]
        total = sum(joint)
        resp.append([j / total for j in joint])
        ll += math.log(total)
    return torch.tensor(resp, dtype=torch.float64), ll


def test_e_step_responsibilities_and_log_likelihood_by_hand():
    em = BernoulliMixtureEM(_form())
    stats, ll = em.em_statistics(X, THETA)
    r, expect = _by_hand()
    assert ll.shape == (1,) and math.isclose(float(ll[0]), expect, rel_tol=1e-12)
    torch.testing.assert_close(stats["count"][0], r.sum(0))
    torch.testing.assert_close(stats["ones"][0], r.T @ X)


def test_a_probability_of_zero_or_one_scores_matching_data_as_certain():
    em = BernoulliMixtureEM(_form())
    theta = {"weights": torch.tensor([[1.0, 0.0]], dtype=torch.float64),
             "probs": torch.tensor([[[1.0, 0.0], [0.5, 0.5]]], dtype=torch.float64)}
    stats, ll = em.em_statistics(torch.tensor([[1.0, 0.0]], dtype=torch.float64), theta)
    assert float(ll[0]) == 0.0
    torch.testing.assert_close(stats["count"][0], torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_m_step_is_the_dirichlet_and_beta_modes():
    em = BernoulliMixtureEM(_form(c=2.0, a=2.0, b=3.0))
    stats = {"count": torch.tensor([[3.0, 1.0]], dtype=torch.float64),
             "ones": torch.tensor([[[2.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)}
    theta, bad = em.em_maximize(stats, THETA, flat=False)
    # w_k = (n_k + c - 1) / (N + K (c - 1)); p_kd = (s_kd + a - 1) / (n_k + a + b - 2)
    torch.testing.assert_close(theta["weights"][0], torch.tensor([4 / 6, 2 / 6], dtype=torch.float64))
    torch.testing.assert_close(theta["probs"][0], torch.tensor([[3 / 6, 1 / 6], [2 / 4, 2 / 4]], dtype=torch.float64))
    assert not bool(bad.any())
    flat, _ = em.em_maximize(stats, THETA, flat=True)
    torch.testing.assert_close(flat["weights"][0], torch.tensor([0.75, 0.25], dtype=torch.float64))
    torch.testing.assert_close(flat["probs"][0], torch.tensor([[2 / 3, 0.0], [1.0, 1.0]], dtype=torch.float64))


def test_an_empty_component_keeps_its_probabilities_under_a_flat_prior():
    em = BernoulliMixtureEM(_form(flat=True))
    stats = {"count": torch.tensor([[2.0, 0.0]], dtype=torch.float64),
             "ones": torch.tensor([[[1.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)}
    theta, _ = em.em_maximize(stats, THETA, flat=False)
    torch.testing.assert_close(theta["probs"][0, 1], THETA["probs"][0, 1])
    torch.testing.assert_close(theta["probs"][0, 0], torch.tensor([0.5, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("c,a,b,what", [(0.5, 2.0, 2.0, "the weights' Dirichlet concentration is 0.5"),
                                        (1.0, 0.9, 2.0, "the Beta's concentration1 is 0.9"),
                                        (1.0, 1.0, 0.5, "the Beta's concentration0 is 0.5")])
def test_priors_below_one_have_no_mode(c, a, b, what):
    em = BernoulliMixtureEM(_form(c=c, a=a, b=b))
    with pytest.raises(SpecError, match=f"routine em: {what}") as err:
        em.em_check(flat=False)
    # the way out is named as an installed ppgen takes it: a zoo recipe name, not a checkout's path
    assert "fit the program with --inference svi" in str(err.value) and "inference/" not in str(err.value)
    em.em_check(flat=True)  # maximum likelihood ignores the priors
    BernoulliMixtureEM(_form(c=1.0, a=1.0, b=1.0)).em_check(flat=False)


def test_the_start_is_smoothed_cluster_frequencies_strictly_inside_the_unit_interval():
    em = BernoulliMixtureEM(_form(k=2, d=3))
    x = torch.tensor([[1.0, 1.0, 0.0]] * 4 + [[0.0, 0.0, 1.0]] * 2)
    theta = em.init_values(x, torch.Generator().manual_seed(0))
    order = torch.argsort(theta["weights"], descending=True)
    torch.testing.assert_close(theta["weights"][order], torch.tensor([5 / 8, 3 / 8], dtype=torch.float64))
    torch.testing.assert_close(theta["probs"][order], torch.tensor([[5 / 6, 5 / 6, 1 / 6], [1 / 4, 1 / 4, 3 / 4]],
                                                                   dtype=torch.float64))


def test_log_prior():
    em = BernoulliMixtureEM(_form(c=2.0, a=2.0, b=3.0))
    expect = (Dirichlet(torch.tensor([2.0, 2.0], dtype=torch.float64)).log_prob(THETA["weights"][0])
              + Beta(torch.tensor(2.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64))
              .log_prob(THETA["probs"][0]).sum())
    torch.testing.assert_close(em.log_prior(THETA)[0], expect)
    torch.testing.assert_close(BernoulliMixtureEM(_form(flat=True)).log_prior(THETA),
                               torch.zeros(1, dtype=torch.float64))
    assert em.em_chunk(4) == 2**17 // (4 * 2 * 2)
