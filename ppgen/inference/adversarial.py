"""Adversarial training: alternating updates of a discriminator D and a generator G.

Each step takes one batch of real examples and updates D on it against as many generated examples;
every ``n_critic``-th step G is then updated against the new D (Arjovsky et al. train the critic on
``n_critic`` fresh batches per generator update, which this schedule reproduces). D outputs a real
score s(x). The losses, each a pair (D's loss, G's loss) to minimise, with sigma the logistic function:

``minimax`` (Goodfellow et al. 2014, eq. 1), the lecture's game min_G max_D V(D, G),
    V = E_x log sigma(s(x)) + E_z log(1 - sigma(s(G(z)))); D minimises -V, G minimises
    E_z log(1 - sigma(s(G(z)))). At the optimal D, V = 2 JSD(p_data || p_G) - log 4 (their Theorem 1).
``nonsaturating`` (Goodfellow et al. 2014, sec. 3): D as above; G minimises -E_z log sigma(s(G(z))),
    whose gradient does not vanish while D rejects the samples with confidence.
``wasserstein`` (Arjovsky et al. 2017; Gulrajani et al. 2017): the critic minimises
    E_z s(G(z)) - E_x s(x) + lambda E (||grad s(x_hat)||_2 - 1)^2 on interpolates
    x_hat = eps x + (1 - eps) G(z), eps ~ U(0, 1); G minimises -E_z s(G(z)).
``hinge`` (Lim & Ye 2017; Miyato et al. 2018): D minimises E_x max(0, 1 - s(x)) + E_z max(0, 1 + s(G(z)));
    G minimises -E_z s(G(z)).

``gradient_penalty`` (lambda) may be added to any loss (Fedus et al. 2018); ``wasserstein`` requires it.
``penalty`` says which: ``interpolates``, the two-sided penalty above, or ``r1``, the zero-centred
    penalty on the real examples, lambda/2 E_x ||grad s(x)||^2 (Mescheder, Geiger & Nowozin 2018, eq. 9).
    R1 vanishes at the equilibrium where the generator matches the data and D is constant there, which
    makes that equilibrium locally convergent for alternating gradient steps; the interpolates penalty
    does not vanish there, and with it the two players can keep circling.
``lr_half_life`` decays both learning rates exponentially with the step count, which damps the
oscillation of the two players late in training.
``lookahead`` (k) makes both players' updates the fast weights of a joint Lookahead (Zhang et al. 2019)
over the game (Lookahead-minmax, Chavdarova et al. 2021): after every k-th generator update both
networks' slow weights move a fraction ``lookahead_alpha`` towards the fast ones, and the fast weights
restart from there. Rotation around an equilibrium, which plain alternating steps follow in circles,
is averaged out by the backtracking; the slow weights are checkpointed (``State.extra["slow"]``).
``ema`` keeps an exponential moving average of G's weights in the model (``generator_ema``), which
``sample`` then uses (Yazici et al. 2019), with a warm-up of the decay (:func:`ema_decay`). Both networks' weights (and the average) are in the model's
state dict and both optimizers in the routine's, so a resumed run continues exactly.

Reported per step: ``loss`` (D's loss, penalty included), ``g_loss`` (on generator steps), ``d_real``
and ``d_fake`` (mean sigma(s) for minimax and non-saturating, so 0.5 at equilibrium; mean s for the
others), ``gp`` where a penalty is used. ``validate`` gives ``val_loss``, D's loss without penalty on
held-out examples, whose gap to the training loss shows a discriminator that memorises, and for scalar
data ``val_ks``, the two-sample Kolmogorov-Smirnov distance between as many samples and held-out examples.

References:
    Goodfellow et al. (2014), Generative Adversarial Nets, NeurIPS; arXiv:1406.2661.
    Arjovsky, Chintala & Bottou (2017), Wasserstein GAN, ICML; arXiv:1701.07875.
    Gulrajani, Ahmed, Arjovsky, Dumoulin & Courville (2017), Improved Training of Wasserstein GANs,
    NeurIPS; arXiv:1704.00028.
    Lim & Ye (2017), Geometric GAN, arXiv:1705.02894.
    Miyato, Kataoka, Koyama & Yoshida (2018), Spectral Normalization for GANs, ICLR; arXiv:1802.05957.
    Fedus et al. (2018), Many Paths to Equilibrium: GANs Do Not Need to Decrease a Divergence at Every
    Step, ICLR; arXiv:1710.08446.
    Yazici et al. (2019), The Unusual Effectiveness of Averaging in GAN Training, ICLR; arXiv:1806.04498.
    Zhang, Lucas, Hinton & Ba (2019), Lookahead Optimizer: k steps forward, 1 step back, NeurIPS;
    arXiv:1907.08610.
    Chavdarova, Pagliardini, Stich, Fleuret & Jaggi (2021), Taming GANs with Lookahead-Minmax, ICLR;
    arXiv:2006.14567.
    Mescheder, Geiger & Nowozin (2018), Which Training Methods for GANs do actually Converge?, ICML;
    arXiv:1801.04406.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Protocol

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn.functional import relu, softplus

from ppgen.inference.base import (Plan, Routine, State, clip_and_step, make_optimizer, parameter_names,
                                  validation_batches)
from ppgen.inference.capability import require
from ppgen.registry import register_routine
from ppgen.spec import InferenceSpec, OptimizerSpec, SpecError

LossName = Literal["minimax", "nonsaturating", "wasserstein", "hinge"]


class AdversarialConfig(InferenceSpec):
    """``optimizer`` updates the generator; ``discriminator_optimizer`` the discriminator (the same
    settings when left out). The defaults are DCGAN's Adam(lr 2e-4, betas (0.5, 0.999))."""

    routine: Literal["adversarial"] = "adversarial"
    loss: LossName = "nonsaturating"
    n_critic: int = Field(1, ge=1, le=100, description="discriminator updates per generator update")
    gradient_penalty: float = Field(0.0, ge=0.0, description="lambda of the gradient penalty (see penalty)")
    penalty: Literal["interpolates", "r1"] = Field(
        "interpolates", description="interpolates: (|grad| - 1)^2 between real and fake (WGAN-GP); r1: |grad|^2 / 2 on real"
    )
    ema: float | None = Field(None, gt=0.0, lt=1.0, description="decay of the generator's moving average")
    lr_half_life: int | None = Field(
        None, ge=1, description="steps over which both learning rates halve (lr * 0.5 ** (step / half_life))"
    )
    lookahead: int | None = Field(
        None, ge=1, description="generator updates between joint lookahead steps of both players (k)"
    )
    lookahead_alpha: float = Field(0.5, gt=0.0, le=1.0, description="slow weights move this far towards the fast")
    optimizer: OptimizerSpec = Field(default_factory=lambda: OptimizerSpec(lr=2e-4, betas=(0.5, 0.999)))
    discriminator_optimizer: OptimizerSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> "AdversarialConfig":
        if self.loss == "wasserstein" and self.gradient_penalty <= 0:
            raise ValueError(
                "loss 'wasserstein' needs a Lipschitz constraint on the critic: set gradient_penalty "
                "(Gulrajani et al. 2017 use 10)"
            )
        return self


# --------------------------------------------------------------------------- the losses


class AdversarialLoss:
    """A loss is two functions of D's scores, each a scalar to minimise: ``discriminator(real, fake)``
    and ``generator(fake)``; ``probabilities`` says whether sigma(score) is a probability of "real"."""

    def __init__(self, name: str, discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 generator: Callable[[torch.Tensor], torch.Tensor], probabilities: bool) -> None:
        self.name = name
        self.discriminator = discriminator
        self.generator = generator
        self.probabilities = probabilities


def _d_logistic(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # -log sigma(s) = softplus(-s) and -log(1 - sigma(s)) = softplus(s), without overflow.
    return softplus(-real).mean() + softplus(fake).mean()


LOSSES: dict[str, AdversarialLoss] = {
    "minimax": AdversarialLoss("minimax", _d_logistic, lambda fake: -softplus(fake).mean(), True),
    "nonsaturating": AdversarialLoss("nonsaturating", _d_logistic, lambda fake: softplus(-fake).mean(), True),
    "wasserstein": AdversarialLoss("wasserstein", lambda real, fake: fake.mean() - real.mean(),
                                   lambda fake: -fake.mean(), False),
    "hinge": AdversarialLoss("hinge", lambda real, fake: relu(1 - real).mean() + relu(1 + fake).mean(),
                             lambda fake: -fake.mean(), False),
}


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """E (||grad_x s(x_hat)||_2 - 1)^2 at x_hat = eps real + (1 - eps) fake, one eps ~ U(0, 1) per
    example (Gulrajani et al. 2017, Algorithm 1); differentiable with respect to the critic."""
    if eps is None:
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    eps = eps.reshape(-1, *([1] * (real.dim() - 1)))
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return ((grad.reshape(grad.shape[0], -1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """(1/2) E ||grad_x s(x)||_2^2 over the real examples (R1, Mescheder et al. 2018, eq. 9; the weight
    gamma is ``gradient_penalty``); differentiable with respect to the critic."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return 0.5 * grad.reshape(grad.shape[0], -1).pow(2).sum(1).mean()


# --------------------------------------------------------------------------- the routine


class AdversarialFamily(Protocol):
    """A generator G(z) with a prior over z, and a discriminator (critic) that scores examples."""

    generator: nn.Module
    discriminator: nn.Module

    def prior(self, batch: tuple[int, ...] = ()) -> Any:
        """The distribution of z, with batch shape ``batch``."""
        ...

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's score of each example."""
        ...


class GeneratorAverage(Protocol):
    """A copy of the generator that holds its moving average (ema)."""

    generator_ema: nn.Module
    ema_updates: torch.Tensor


@register_routine("adversarial")
class Adversarial(Routine):
    Config = AdversarialConfig

    def requirements(self) -> tuple[type, ...]:
        return (AdversarialFamily,) + ((GeneratorAverage,) if self.config.ema is not None else ())

    def init(self, model: torch.nn.Module, plan: Plan | None = None) -> State:
        require(self, model)
        cfg = self.config
        if cfg.gradient_penalty > 0 and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                            for m in model.discriminator.modules()):
            raise SpecError(
                "the gradient penalty is a per-example quantity, but batch norm in the discriminator mixes "
                "the examples of a batch; set discriminator.norm to 'layer' or 'none' in the model spec"
            )
        self.loss = LOSSES[cfg.loss]
        d_spec = cfg.discriminator_optimizer or cfg.optimizer
        state = State(
            model=model,
            optimizers={
                "generator": make_optimizer(model.generator.parameters(), cfg.optimizer),
                "discriminator": make_optimizer(model.discriminator.parameters(), d_spec),
            },
        )
        if cfg.lookahead is not None:
            state.extra["slow"] = {name: [p.detach().clone() for p in _players(model)[name]]
                                   for name in ("generator", "discriminator")}
        return state

    def step(self, state: State, batch: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[State, dict[str, float]]:
        x, _ = batch
        model, cfg = state.model, self.config
        opt_g, opt_d = state.optimizers["generator"], state.optimizers["discriminator"]
        n = x.shape[0]

        # Discriminator: real against generated, G's output detached so no gradient reaches G. On a step
        # that also updates G the same samples serve G's update (one generator pass, as in DCGAN).
        g_step = (state.step + 1) % cfg.n_critic == 0
        if cfg.lr_half_life is not None:
            # A function of the step count alone, so a resumed run sets the same rates.
            factor = 0.5 ** (state.step / cfg.lr_half_life)
            for opt, spec in ((opt_g, cfg.optimizer), (opt_d, cfg.discriminator_optimizer or cfg.optimizer)):
                for group in opt.param_groups:
                    group["lr"] = spec.lr * factor
        with torch.set_grad_enabled(g_step):
            fake = model.generator(model.prior((n,)).sample())
        real_s, fake_s = model.score(x), model.score(fake.detach())
        d_loss = self.loss.discriminator(real_s, fake_s)
        info: dict[str, float] = {}
        if cfg.gradient_penalty > 0:
            gp = r1_penalty(model.score, x) if cfg.penalty == "r1" else gradient_penalty(model.score, x, fake)
            d_loss = d_loss + cfg.gradient_penalty * gp
            info["gp"] = float(gp.detach())
        opt_d.zero_grad(set_to_none=True)
        self.runtime.backward(d_loss)
        self.runtime.reduce_gradients(model.discriminator.parameters())
        clip_and_step(opt_d, cfg.discriminator_optimizer or cfg.optimizer)
        info["loss"] = float(d_loss.detach())
        squash = torch.sigmoid if self.loss.probabilities else (lambda t: t)
        info["d_real"] = float(squash(real_s.detach()).mean())
        info["d_fake"] = float(squash(fake_s.detach()).mean())

        # Generator, every n_critic-th step, against the updated discriminator.
        if g_step:
            # D's weights are frozen for this backward pass: the gradient flows through D to G's
            # output, but D's own weight gradients (unused here) are never computed.
            model.discriminator.requires_grad_(False)
            try:
                g_loss = self.loss.generator(model.score(fake))
                opt_g.zero_grad(set_to_none=True)
                self.runtime.backward(g_loss)
            finally:
                model.discriminator.requires_grad_(True)
            self.runtime.reduce_gradients(model.generator.parameters())
            clip_and_step(opt_g, cfg.optimizer)
            info["g_loss"] = float(g_loss.detach())
            if cfg.lookahead is not None and ((state.step + 1) // cfg.n_critic) % cfg.lookahead == 0:
                lookahead_step(model, state.extra["slow"], cfg.lookahead_alpha)
            if cfg.ema is not None:
                update_ema(model, cfg.ema)
        state.step += 1
        return state, info

    def trained_parameters(self, state: State, since: int) -> dict[str, list[str]]:
        """Each player as a whole: the discriminator on every step, the generator only if one of those
        steps was an n_critic-th. Not each tensor: the critic's output bias shifts every score alike, so
        under the Wasserstein loss, and the hinge loss inside its margin, its gradient is zero by design."""
        if state.step <= since:
            return {}
        players = _players(state.model)
        groups = {"discriminator": parameter_names(state.model, players["discriminator"])}
        if state.step // self.config.n_critic > since // self.config.n_critic:
            groups["generator"] = parameter_names(state.model, players["generator"])
        return groups

    def validate(self, state: State, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """D's loss (no penalty) on held-out examples against as many fresh samples, in eval mode."""
        model = state.model
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            total, real_sum, fake_sum = 0.0, 0.0, 0.0
            squash = torch.sigmoid if self.loss.probabilities else (lambda t: t)
            for xb, _ in validation_batches(x, None, 1000):
                fake = model.generator(model.prior((xb.shape[0],)).sample())
                rs, fs = model.score(xb), model.score(fake)
                total += float(self.loss.discriminator(rs, fs)) * xb.shape[0]
                real_sum += float(squash(rs).sum())
                fake_sum += float(squash(fs).sum())
        finally:
            for m, mode in modes:
                m.training = mode
        n = x.shape[0]
        out = {"val_loss": total / n, "val_d_real": real_sum / n, "val_d_fake": fake_sum / n}
        if x[0].numel() == 1:
            # Scalar data: how far the samples that ``sample`` draws (the moving average when there is
            # one) are from the held-out examples, as many of each; the curve over epochs shows whether
            # training settles or the two players keep circling.
            from ppgen.evaluation.toy_checks import ks_two_sample

            out["val_ks"] = ks_two_sample(model.sample(n), x)
        return out


def _players(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    return {"generator": [p for p in model.generator.parameters() if p.requires_grad],
            "discriminator": [p for p in model.discriminator.parameters() if p.requires_grad]}


@torch.no_grad()
def lookahead_step(model: torch.nn.Module, slow: dict[str, list[torch.Tensor]], alpha: float) -> None:
    """One joint lookahead step: slow <- slow + alpha (fast - slow), then fast <- slow, for both
    players' parameters (the optimizers' moment estimates are kept, as in Chavdarova et al. 2021)."""
    for name, params in _players(model).items():
        for s, p in zip(slow[name], params, strict=True):
            s.lerp_(p.to(s.device), alpha)
            p.copy_(s)


def ema_decay(decay: float, updates: int) -> float:
    """The decay of the ``updates + 1``-th update: min(decay, (1 + t) / (10 + t)) with t = ``updates``,
    the warm-up of TensorFlow's ExponentialMovingAverage, so that early weights, which belong to a
    different network, are forgotten quickly (the first update, t = 0, keeps 1/10 of the old copy)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


@torch.no_grad()
def update_ema(model: torch.nn.Module, decay: float) -> None:
    """generator_ema <- d generator_ema + (1 - d) generator, parameter by parameter, with d from
    :func:`ema_decay`; buffers (batch norm's running statistics) are copied. The first update copies
    the generator."""
    first = int(model.ema_updates) == 0
    d = ema_decay(decay, int(model.ema_updates))
    ema_params = dict(model.generator_ema.named_parameters())
    for name, p in model.generator.named_parameters():
        if first:
            ema_params[name].copy_(p)
        else:
            ema_params[name].lerp_(p, 1.0 - d)
    ema_buffers = dict(model.generator_ema.named_buffers())
    for name, b in model.generator.named_buffers():
        ema_buffers[name].copy_(b)
    model.ema_updates += 1
