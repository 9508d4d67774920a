"""Generative adversarial networks: an explicit prior over z and an implicit likelihood x = G(z).

The generator is a Pyro model: ``z ~ p(z)`` (Normal(0, I) or Uniform(low, high), declared in the spec)
and ``x = G(z)``, a deterministic site. It has no density, so there is no ``log_likelihood`` (it
returns ``None``): the data enter only through the discriminator D, a classifier of real versus generated
examples trained by :mod:`ppgen.inference.adversarial` in the two-player game of Goodfellow et al.

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))].

Networks: MLPs, or the DCGAN design of Radford et al. (transposed convolutions with batch norm in G,
strided convolutions with leaky ReLU in D). The discriminator outputs a real score (a logit for the
minimax and non-saturating losses, a critic value for the Wasserstein and hinge losses).

The family also holds ``generator_ema``, an exponential moving average of the generator's weights that
the routine keeps when the recipe sets ``ema`` (Yazici et al. 2019); ``sample`` draws from it once it
has been updated, and since it is part of the module's ``state_dict`` every checkpoint carries it.

References:
    Goodfellow et al. (2014), Generative Adversarial Nets, NeurIPS; arXiv:1406.2661.
    Radford, Metz & Chintala (2016), Unsupervised Representation Learning with Deep Convolutional
    Generative Adversarial Networks, ICLR; arXiv:1511.06434.
    Yazici et al. (2019), The Unusual Effectiveness of Averaging in GAN Training, ICLR; arXiv:1806.04498.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal, Sequence

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field, model_validator
from torch import nn

from ppgen.contracts import DiagnosticFigures
from ppgen.data.core import DataInfo, Dataset
from ppgen.models.base import Family
from ppgen.nets import MAX_LAYERS, Activation, Width, activation, checked_build
from ppgen.registry import register_family
from ppgen.spec import ModelSpec, Strict

#: Data sources whose examples are images in [0, 1] that ppgen binarizes by default.
IMAGE_SOURCES = ("mnist", "digits", "images")


# --------------------------------------------------------------------------- spec


class GANLatentSpec(Strict):
    """The prior p(z): ``normal`` is N(0, I); ``uniform`` is Uniform(low, high) in each coordinate
    (with dim 1 and [0, 1] the generator learns the inverse CDF of a 1-D target)."""

    dim: int = Field(64, ge=1, le=4096)
    prior: Literal["normal", "uniform"] = "normal"
    low: float | None = Field(None, description="uniform prior only; default 0")
    high: float | None = Field(None, description="uniform prior only; default 1")

    @model_validator(mode="after")
    def _check(self) -> "GANLatentSpec":
        if self.prior == "normal" and (self.low is not None or self.high is not None):
            raise ValueError("latent.low and latent.high apply to prior 'uniform' only; remove them or set prior: uniform")
        if self.bounds[0] >= self.bounds[1]:
            raise ValueError(f"latent.low ({self.bounds[0]}) must be below latent.high ({self.bounds[1]})")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of the uniform prior."""
        return (0.0 if self.low is None else self.low, 1.0 if self.high is None else self.high)


class GeneratorSpec(Strict):
    """G(z). ``mlp``: ``hidden`` are the widths of the hidden layers. ``conv`` (DCGAN): ``hidden`` are the
    channels of the feature maps from the smallest up, each transposed convolution doubling the side
    (e.g. [128, 64] makes 7x7x128 -> 14x14x64 -> 28x28). ``output``: the last non-linearity, which sets
    the support of G(z): ``auto`` is a sigmoid for images (intensities in [0, 1]) and the identity
    otherwise; ``softplus`` for positive data, ``tanh`` for data in [-1, 1]."""

    kind: Literal["mlp", "conv"] = "mlp"
    hidden: list[Width] = Field(default_factory=lambda: [256, 512], max_length=MAX_LAYERS)
    activation: Activation = "relu"
    norm: Literal["none", "batch"] = "none"
    output: Literal["auto", "sigmoid", "tanh", "identity", "softplus"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> "GeneratorSpec":
        _check_widths(self.hidden, "generator.hidden", self.kind)
        return self


class DiscriminatorSpec(Strict):
    """D(x), one real score per example. ``mlp``: hidden widths; ``conv``: channels of stride-2
    convolutions (e.g. [64, 128]). ``norm``: batch norm as in DCGAN, or layer norm, which unlike batch
    norm suits a gradient penalty (it does not mix examples). ``dropout`` after each hidden layer."""

    kind: Literal["mlp", "conv"] = "mlp"
    hidden: list[Width] = Field(default_factory=lambda: [512, 256], max_length=MAX_LAYERS)
    activation: Activation = "leaky_relu"
    norm: Literal["none", "batch", "layer"] = "none"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> "DiscriminatorSpec":
        _check_widths(self.hidden, "discriminator.hidden", self.kind)
        return self


def _check_widths(widths: list[int], where: str, kind: str) -> None:
    bad = [w for w in widths if w < 1]
    if bad:
        raise ValueError(f"{where}: widths must be positive integers, got {bad}")
    if kind == "conv" and not widths:
        raise ValueError(f"{where}: a conv network needs at least one stage of channels, e.g. [64, 128]")


class GANSpec(ModelSpec):
    family: Literal["gan"] = "gan"
    latent: GANLatentSpec = Field(default_factory=GANLatentSpec)
    generator: GeneratorSpec = Field(default_factory=GeneratorSpec)
    discriminator: DiscriminatorSpec = Field(default_factory=DiscriminatorSpec)

    @model_validator(mode="after")
    def _check(self) -> "GANSpec":
        if self.data.name in IMAGE_SOURCES and self.data.binarize != "none":
            got = self.data.binarize or "the default, dynamic"
            raise ValueError(
                f"data.binarize is {got!r}, but a GAN's generator outputs continuous intensities and its "
                "discriminator would tell binary images apart by their values alone; set data.binarize: none"
            )
        return self


# --------------------------------------------------------------------------- networks


def _output(name: str) -> nn.Module:
    return {"sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "identity": nn.Identity(), "softplus": nn.Softplus()}[name]


class _Standardize(nn.Module):
    """z -> (z - mean) / std of the prior: a Uniform(0, 1) input becomes zero-mean, unit-variance like a
    Normal one, so the same initialisation and step sizes suit both priors."""

    def __init__(self, loc: float, scale: float) -> None:
        super().__init__()
        self.register_buffer("loc", torch.tensor(float(loc)))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.loc) / self.scale


class MLPGenerator(nn.Module):
    """z -> hidden layers (optionally batch-normed) -> prod(event_shape) values -> output non-linearity."""

    def __init__(self, z_dim: int, event_shape: tuple[int, ...], spec: GeneratorSpec, output: str,
                 z_moments: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.standardize = _Standardize(*z_moments)
        layers: list[nn.Module] = []
        width = z_dim
        for h in spec.hidden:
            layers.append(nn.Linear(width, h))
            if spec.norm == "batch":
                layers.append(nn.BatchNorm1d(h))
            layers.append(activation(spec.activation))
            width = h
        layers += [nn.Linear(width, math.prod(event_shape)), _output(output), nn.Unflatten(1, tuple(event_shape))]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(z))


class ConvGenerator(nn.Module):
    """DCGAN's generator (Radford et al. 2016, fig. 1): a linear projection of z to the smallest feature
    map, then stride-2 transposed convolutions (kernel 4) that double the side, batch norm and ReLU
    between them; a crop handles sides that are not powers of two (7 -> 14 -> 28, or 2 -> 4 -> 8)."""

    def __init__(self, z_dim: int, event_shape: tuple[int, ...], spec: GeneratorSpec, output: str,
                 z_moments: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.standardize = _Standardize(*z_moments)
        c_out, h, w = event_shape
        h0, w0 = h, w
        for _ in spec.hidden:
            h0, w0 = (h0 + 1) // 2, (w0 + 1) // 2
        chans = list(spec.hidden)
        self.shape0 = (chans[0], h0, w0)
        self.out_hw = (h, w)
        bn = spec.norm == "batch"
        head: list[nn.Module] = [nn.Linear(z_dim, chans[0] * h0 * w0)]
        self.head = nn.Sequential(*head)
        body: list[nn.Module] = [nn.BatchNorm2d(chans[0]) if bn else nn.Identity(), activation(spec.activation)]
        for i, ch in enumerate(chans):
            nxt = chans[i + 1] if i + 1 < len(chans) else c_out
            body.append(nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1))
            if i + 1 < len(chans):
                body += [nn.BatchNorm2d(nxt) if bn else nn.Identity(), activation(spec.activation)]
        body.append(_output(output))
        self.body = nn.Sequential(*body)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.body(self.head(self.standardize(z)).view(-1, *self.shape0))
        return out[..., : self.out_hw[0], : self.out_hw[1]]


class MLPDiscriminator(nn.Module):
    def __init__(self, event_shape: tuple[int, ...], spec: DiscriminatorSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(event_shape)
        for h in spec.hidden:
            layers.append(nn.Linear(width, h))
            if spec.norm == "batch":
                layers.append(nn.BatchNorm1d(h))
            elif spec.norm == "layer":
                layers.append(nn.LayerNorm(h))
            layers.append(activation(spec.activation))
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class ConvDiscriminator(nn.Module):
    """DCGAN's discriminator: stride-2 convolutions (kernel 4, or 3 on maps under 8 pixels) with leaky
    ReLU, normalisation on every stage but the first (as in the paper), then a linear score."""

    def __init__(self, event_shape: tuple[int, ...], spec: DiscriminatorSpec) -> None:
        super().__init__()
        c, h, w = event_shape
        layers: list[nn.Module] = []
        for i, ch in enumerate(spec.hidden):
            layers.append(nn.Conv2d(c, ch, 4 if min(h, w) >= 8 else 3, stride=2, padding=1))
            h, w = (h + 1) // 2, (w + 1) // 2
            if i > 0 and spec.norm == "batch":
                layers.append(nn.BatchNorm2d(ch))
            elif i > 0 and spec.norm == "layer":
                layers.append(nn.GroupNorm(1, ch))  # one group: layer norm over (C, H, W) of each example
            layers.append(activation(spec.activation))
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            c = ch
        self.body = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            n_feat = self.body(torch.zeros(2, *event_shape)).shape[1]
        self.head = nn.Linear(n_feat, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(-1)


def build_generator(spec: GeneratorSpec, z_dim: int, event_shape: tuple[int, ...], output: str,
                    z_moments: tuple[float, float] = (0.0, 1.0)) -> nn.Module:
    """G for z of the given prior (mean, std), which the generator's first step standardizes."""
    what = f"generator: kind {spec.kind!r} with hidden {spec.hidden}"
    if spec.kind == "mlp":
        return checked_build(lambda: MLPGenerator(z_dim, event_shape, spec, output, z_moments), what)
    if len(event_shape) != 3:
        raise ValueError(f"generator.kind 'conv' needs image data (C, H, W), got event shape {event_shape}; use 'mlp'")
    return checked_build(lambda: ConvGenerator(z_dim, event_shape, spec, output, z_moments), what)


def build_discriminator(spec: DiscriminatorSpec, event_shape: tuple[int, ...]) -> nn.Module:
    what = f"discriminator: kind {spec.kind!r} with hidden {spec.hidden}"
    if spec.kind == "mlp":
        return checked_build(lambda: MLPDiscriminator(event_shape, spec), what)
    if len(event_shape) != 3:
        raise ValueError(
            f"discriminator.kind 'conv' needs image data (C, H, W), got event shape {event_shape}; use 'mlp'"
        )
    return checked_build(lambda: ConvDiscriminator(event_shape, spec), what)


# --------------------------------------------------------------------------- the family


@register_family("gan")
class GAN(Family, DiagnosticFigures):
    """Generative adversarial network: z ~ p(z), x = G(z), fitted against a discriminator; no likelihood."""

    Spec = GANSpec
    default_routine = "adversarial"
    generator: nn.Module
    discriminator: nn.Module
    generator_ema: nn.Module
    ema_updates: torch.Tensor

    def __init__(self, spec: GANSpec, info: DataInfo) -> None:
        super().__init__(spec, info)
        if info.kind == "binary":
            raise ValueError(
                "the data are binarized, but a GAN's generator outputs continuous values; set data.binarize: none"
            )
        self.z_dim = spec.latent.dim
        self.event_shape = tuple(info.event_shape)
        output = spec.generator.output
        if output == "auto":
            output = "sigmoid" if len(self.event_shape) == 3 else "identity"
        self.output = output
        low, high = spec.latent.bounds
        moments = ((low + high) / 2, (high - low) / math.sqrt(12)) if spec.latent.prior == "uniform" else (0.0, 1.0)
        self.generator = build_generator(spec.generator, self.z_dim, self.event_shape, output, moments)
        self.discriminator = build_discriminator(spec.discriminator, self.event_shape)
        # The moving average starts as a copy (deepcopy draws no random numbers) and is frozen: only the
        # routine writes it, never an optimizer.
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("_low", torch.tensor(float(low)))
        self.register_buffer("_high", torch.tensor(float(high)))

    # -- distributions ------------------------------------------------------------------------
    def prior(self, batch: tuple[int, ...] = ()) -> dist.Distribution:
        """p(z) with batch shape ``batch`` and event shape (z_dim,)."""
        shape = (*batch, self.z_dim)
        if self.spec.latent.prior == "uniform":
            return dist.Uniform(self._low.expand(shape), self._high.expand(shape)).to_event(1)
        zeros = self._low.new_zeros(shape)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def generate(self, z: torch.Tensor, ema: bool | None = None) -> torch.Tensor:
        """G(z) for z of shape (batch, z_dim); ``ema`` picks the averaged generator (default: when it
        has been updated)."""
        return self._generator(ema)(z)

    def _generator(self, ema: bool | None) -> nn.Module:
        use = bool(self.ema_updates > 0) if ema is None else ema
        if use and int(self.ema_updates) == 0:
            raise ValueError("ema=True, but this GAN was not trained with a moving average (recipe key 'ema')")
        return self.generator_ema if use else self.generator

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """D(x): one real score per example (a logit or a critic value, depending on the loss)."""
        return self.discriminator(x)

    # -- Pyro model and guide -------------------------------------------------------------------
    def model(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """z ~ p(z), x = G(z) for ``n`` examples (or as many as ``x`` has). The likelihood is implicit:
        ``x`` is a deterministic site, so an observed ``x`` sets the batch size but cannot be scored;
        the data reach a GAN only through its discriminator."""
        if n is None:
            if x is None:
                raise ValueError("GAN.model needs x or n to know how many examples to draw")
            n = x.shape[0]
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior((n,)))
            return pyro.deterministic("x", self.generate(z, ema=False), event_dim=len(self.event_shape))

    def guide(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, n: int | None = None) -> None:
        """Empty: a GAN learns no posterior q(z|x). With this guide ``pyro.infer.Predictive`` draws z from
        the prior, which is how the generator samples."""
        return None

    # -- sampling; no likelihood ----------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, ema: bool | None = None) -> torch.Tensor:
        """``n`` draws G(z), z ~ p(z), shape (n, *event_shape), computed in eval mode (batch norm uses its
        running statistics, so a sample never depends on the other samples of its batch)."""
        gen = self._generator(ema)
        with _eval_mode(gen):
            return gen(self.prior((n,)).sample())

    def log_likelihood(self, x: torch.Tensor, k: int = 1000,
                       y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``None``: x = G(z) is a deterministic map of z into a manifold of dimension at most z_dim, so
        the model has no density on the data space; a GAN is measured by its samples instead
        (:mod:`ppgen.quality`)."""
        return None

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """Mean discriminator scores of the test examples and of as many generated ones, and their gap:
        for the Wasserstein critic the gap estimates W1 (up to the critic's Lipschitz constant); a large
        gap under the other losses means the discriminator still tells the two apart."""
        real, fake = [], []
        with _eval_mode(self):
            for start in range(0, x.shape[0], 1000):
                xb = x[start : start + 1000]
                real.append(self.score(xb))
                fake.append(self.score(self.sample(xb.shape[0])))
        r, f = torch.cat(real), torch.cat(fake)
        return {"critic_real": float(r.mean()), "critic_fake": float(f.mean()), "critic_gap": float(r.mean() - f.mean())}

    # -- figures and ArviZ ----------------------------------------------------------------------
    def figures(self, folder: Path, data: Dataset) -> dict[str, Path]:
        """``samples.png`` (a 10x10 grid for images, a scatter or histogram over the data otherwise);
        for 1-D data ``generator.png``, the learned map z -> G(z) against the exact inverse CDF of a
        ``toy1d`` target; for 2-D data ``discriminator.png``, samples over the discriminator's scores."""
        folder = Path(folder)
        with _eval_mode(self), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            x_test = data.split("test")[0]
            out: dict[str, Path] = {}
            from ppgen import plots

            if len(self.event_shape) == 3:
                out["samples"] = plots.save_samples(self.sample(100), folder / "samples.png", "samples G(z), z ~ p(z)", nrow=10)
                return out
            out["samples"] = plots.save_samples(self.sample(5000), folder / "samples.png", "samples G(z), z ~ p(z)",
                                                reference=x_test)
            if self.event_shape == (1,):
                out["generator"] = generator_figure(self, folder / "generator.png", reference=data.train_x)
            elif self.event_shape == (2,):
                out["discriminator"] = discriminator_figure(self, folder / "discriminator.png", reference=x_test)
            return out

    @torch.no_grad()
    def inference_data(self, data: Dataset, metrics: list[dict[str, Any]], draws: int = 20, seed: int = 0) -> Any:
        """A GAN has no posterior; its InferenceData holds what it has:

        - ``prior``: ``z`` drawn from p(z), dims (chain, draw, obs, latent);
        - ``prior_predictive``: ``x`` = G(z), dims (chain, draw, obs, value): ``draws`` replicate data
          sets, each as large as the observed one, which ``az.plot_ppc(idata, group="prior")`` sets against
        - ``observed_data``: test examples (500, or 16 images), dims (obs, value);
        - ``sample_stats``: the training trace (discriminator and generator losses), dims (chain, draw=record).
        """
        from ppgen.arviz_data import arviz, loss_trace

        az = arviz()
        x_obs = data.split("test")[0]
        n_obs = min(len(x_obs), 16 if len(self.event_shape) == 3 else 500)
        x_obs = x_obs[:n_obs].reshape(n_obs, -1)
        with _eval_mode(self), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = self.prior((draws, n_obs)).sample()
            x_gen = self._generator(None)(z.reshape(-1, self.z_dim)).reshape(draws, n_obs, -1)
        stats = loss_trace(metrics)
        kwargs: dict[str, Any] = {"sample_stats": stats} if stats else {}
        return az.from_dict(
            prior={"z": z.cpu().numpy()[None]},
            prior_predictive={"x": x_gen.cpu().numpy()[None]},
            observed_data={"x": x_obs.cpu().numpy()},
            coords={"obs": list(range(n_obs)), "latent": list(range(self.z_dim)), "value": list(range(x_obs.shape[1]))},
            dims={"z": ["obs", "latent"], "x": ["obs", "value"]},
            **kwargs,
        )

    def diagnostic_figures(self, idata: Any, folder: Path) -> dict[str, Path]:
        """``losses.png``: both players' training losses; for 1-D data ``ppc.png``, ArviZ's check of the
        generated data sets (prior predictive) against the observed one."""
        from ppgen.arviz_data import arviz
        from ppgen.plots import save_figure, subplots

        folder = Path(folder)
        out: dict[str, Path] = {}
        if "sample_stats" in idata.groups():
            st = idata.sample_stats
            keys = [k for k in ("loss", "g_loss", "d_real", "d_fake", "gp") if k in st]
            step = st["step"].values[0] if "step" in st else None
            fig, axes = subplots(1, len(keys), figsize=(3.6 * len(keys), 3.0), squeeze=False)
            for ax, key in zip(axes[0], keys):
                v = st[key].values[0]
                ax.plot(step if step is not None else range(len(v)), v, lw=0.8)
                name = {"loss": "discriminator loss", "g_loss": "generator loss", "d_real": "mean D(x) on data",
                        "d_fake": "mean D(G(z)) on samples", "gp": "gradient penalty"}.get(key, key)
                ax.set_title(name, fontsize=9)
                ax.set_ylabel(name, fontsize=8)
                ax.set_xlabel("step")
                ax.grid(alpha=0.3)
            fig.tight_layout()
            out["losses"] = save_figure(fig, folder / "losses.png")
        if self.event_shape == (1,):
            az = arviz()
            import warnings

            fig, ax = subplots(figsize=(6, 4))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                az.plot_ppc(idata, group="prior", num_pp_samples=20, ax=ax)
            out["ppc"] = save_figure(fig, folder / "ppc.png")
        return out


class _eval_mode:
    """Put a module in eval mode for a block and restore each submodule's mode afterwards."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.module.modules()]
        self.module.eval()
        return self.module

    def __exit__(self, *exc: Any) -> None:
        for m, mode in self.modes:
            m.training = mode


# --------------------------------------------------------------------------- figures


def _toy1d_target(model: GAN) -> Any:
    data = model.spec.data
    if data.name != "toy1d" or data.distribution is None:
        return None
    from ppgen.data.toy import toy1d

    return toy1d(data.distribution)


@torch.no_grad()
def generator_figure(model: GAN, path: Path, reference: torch.Tensor | None = None, n: int = 10_000) -> Path:
    """Inverse transform sampling by a GAN, as a PNG: :func:`plot_generator` on one or two panels."""
    from ppgen.plots import save_figure, subplots

    panels = 2 if model.z_dim == 1 else 1
    fig, axes = subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    plot_generator(model, list(axes[0]), reference, n)
    fig.tight_layout()
    return save_figure(fig, path)


@torch.no_grad()
def plot_generator(model: GAN, axes: list[Any], reference: torch.Tensor | None = None, n: int = 10_000) -> float | None:
    """First axis: the density of ``n`` samples against the exact density of a ``toy1d`` target (or a
    histogram of ``reference`` data). Second axis, if given (1-D latent): the learned map z -> G(z)
    against the exact inverse CDF F^-1 of the target composed with the prior's CDF (for a Uniform(0, 1)
    prior F^-1(z) itself); a GAN may as well learn the decreasing solution F^-1(1 - F_z(z)), drawn
    dashed. Returns the Kolmogorov-Smirnov distance of the samples to the target (None without one)."""
    from ppgen import quality

    target = _toy1d_target(model)
    with _eval_mode(model):
        x = model.sample(n).reshape(-1).double()
    ax = axes[0]
    lo, hi = torch.quantile(x, 0.001).item(), torch.quantile(x, 0.999).item()
    ax.hist(x.numpy(), bins=120, range=(lo, hi), density=True, alpha=0.55, color="C0", label="G(z)")
    title, ks = f"{n} samples", None
    if target is not None:
        grid = torch.linspace(lo, hi, 400, dtype=torch.float64)
        ax.plot(grid, target.log_prob(grid).exp(), color="k", lw=1.2, label=f"exact {target.name} density")
        ks = quality.ks_statistic(x, target.cdf)
        title += f", KS = {ks:.4f}"
    elif reference is not None:
        ax.hist(reference.reshape(-1).numpy(), bins=120, range=(lo, hi), density=True, alpha=0.35, color="0.4", label="data")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    if len(axes) > 1 and model.z_dim == 1:
        ax = axes[1]
        u = torch.linspace(0.0005, 0.9995, 999, dtype=torch.float64)
        if model.spec.latent.prior == "uniform":
            lo_z, hi_z = model.spec.latent.bounds
            z = lo_z + (hi_z - lo_z) * u
        else:
            z = torch.special.ndtri(u)
        with _eval_mode(model):
            g = model.generate(z.float().unsqueeze(1)).reshape(-1).double()
        ax.plot(z, g, color="C0", lw=2, label="G(z)")
        if target is not None:
            ax.plot(z, target.icdf(u), color="k", lw=1, label="exact F^-1(F_z(z))")
            ax.plot(z, target.icdf(1 - u), color="k", lw=1, ls="--", label="exact F^-1(1 - F_z(z))")
        ax.set_ylim(lo - 0.5, hi + 0.5)
        ax.set_xlabel("z")
        ax.set_title("the generator against the inverse CDF", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return ks


@torch.no_grad()
def discriminator_figure(model: GAN, path: Path, reference: torch.Tensor | None = None, n: int = 2500) -> Path:
    """2-D data as a PNG: :func:`plot_discriminator`."""
    from ppgen.plots import save_figure, subplots

    fig, ax = subplots(figsize=(6, 5.4))
    plot_discriminator(model, ax, reference, n)
    return save_figure(fig, path)


@torch.no_grad()
def plot_discriminator(model: GAN, ax: Any, reference: torch.Tensor | None = None, n: int = 2500,
                       colorbar: bool = True) -> dict[str, Any] | None:
    """2-D data: the discriminator's score as a colour map, data in grey, ``n`` samples in blue and, for
    the ``ring8``/``grid25`` toys, the mode centres with their 3-sigma circles; returns the
    :func:`ppgen.quality.mode_coverage` of the samples for those toys (None otherwise)."""
    from ppgen import quality
    from matplotlib.patches import Circle

    with _eval_mode(model):
        x = model.sample(n).double()
    pts = x if reference is None else torch.cat([x, reference.double()])
    lo, hi = pts.min(0).values - 0.5, pts.max(0).values + 0.5
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], 160), torch.linspace(lo[1], hi[1], 160), indexing="xy")
    with _eval_mode(model):
        s = model.score(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).float()).reshape(gx.shape)
    im = ax.pcolormesh(gx, gy, s, shading="auto", cmap="RdBu_r", alpha=0.6)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label="D(x) score")
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=2, color="0.3", alpha=0.3, label="data")
    ax.scatter(x[:, 0], x[:, 1], s=2, color="C0", alpha=0.5, label="G(z)")
    title, cov = f"{n} samples", None
    toy = quality.toy2d_modes(model.spec.data)
    if toy is not None:
        centres, std = toy
        cov = quality.mode_coverage(x, centres, std)
        for c in centres:
            ax.add_patch(Circle((float(c[0]), float(c[1])), 3 * std, fill=False, color="k", lw=0.6))
        title += f": {cov['modes_covered']}/{len(centres)} modes, {100 * cov['high_quality_share']:.1f}% high quality"
    ax.set_aspect("equal")
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    return cov
