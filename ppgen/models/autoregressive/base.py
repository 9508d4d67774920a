"""The autoregressive image families' shared machinery (:class:`PixelFamily`): an image of H x W pixels is
generated one pixel at a time in raster order, p(x) = prod_i p(x_i | x_1, ..., x_{i-1}), each conditional
computed by a network whose convolutions are masked so that the output at pixel i sees only the pixels
before it (masks A and B, see :mod:`ppgen.models.autoregressive.masked`). The likelihood of a whole image
is one forward pass, so training is maximum likelihood and evaluation is exact: no bound, no estimator,
standard errors of zero. The networks are in :mod:`ppgen.models.autoregressive.pixelcnn`,
:mod:`~ppgen.models.autoregressive.gated_pixelcnn` and :mod:`~ppgen.models.autoregressive.pixelrnn`.

Every family here is a Pyro model with one observed site ``x`` (and ``y`` when class-conditional): a
Bernoulli likelihood over all pixels for binarized images, a Categorical over ``levels`` grey values
for 8-bit grayscale (``data.binarize: none``). There are no latent variables, so with the empty guide
every ELBO that the ``svi`` routine offers *is* log p(x): SVI is maximum likelihood. A declared Gaussian
prior over the weights, ``prior.kind: normal``, adds log p(theta) to the model as a ``pyro.factor``
weighted by (batch size) / N, N the number of training examples, so that the per-example loss is
-log p(x) - log p(theta) / N and the optimum is the MAP estimate of p(theta | data).

The class-conditional variant (``conditional: true``) models p(x, y) = p(y) p(x | y) with a learned
class prior and per-layer class biases (van den Oord et al. 2016b, eq. 4 with a one-hot h). Bayes' rule
p(y | x) = p(x | y) p(y) / sum_y' p(x | y') p(y') turns it into a classifier, the lecture's point that a
joint model can always answer the discriminative question.

Sampling is pixel by pixel. The plain path re-runs the whole network for every pixel; the fast path
computes each activation once, when the pixels it depends on are final, from cached activation maps
(the idea of Paine et al. 2016 and Ramachandran et al. 2017), so drawing a whole image costs about one
forward pass. Both consume the same pre-drawn uniforms, so one seed gives the same images.

References:
    van den Oord, Kalchbrenner & Kavukcuoglu (2016a), Pixel Recurrent Neural Networks, ICML,
    arXiv:1601.06759.
    van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu (2016b), Conditional Image
    Generation with PixelCNN Decoders, NeurIPS, arXiv:1606.05328.
    Paine, Khorrami, Chang, Zhang, Ramachandran, Hasegawa-Johnson & Huang (2016), Fast Wavenet
    Generation Algorithm, arXiv:1611.09482.
    Ramachandran et al. (2017), Fast Generation for Convolutional Autoregressive Models,
    arXiv:1704.06001.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppgen.bounds import Bound, as_bound
from ppgen.data.core import DataInfo, Dataset
from ppgen.models.autoregressive.idata import class_inference_data, predictive_inference_data
from ppgen.models.autoregressive.layers import Stepper
from ppgen.models.autoregressive.spec import PixelModelSpec
from ppgen.models.base import SVI_EXACT, SVI_MAP, Family
from ppgen.spec import SpecError


class PixelFamily(Family):
    """The machinery every autoregressive image family shares: likelihood heads, the Pyro model and the
    empty guide, the fused loss, exact log-likelihoods, Bayes classification, sampling and completion
    (figures: :mod:`ppgen.plots.pixel`). A subclass builds ``self.net`` (a module mapping the network input
    (n, 1, H, W) and labels to output logits (n, K, H, W) and offering ``stepper(x_in, y, start)``) in
    :meth:`build_net`."""

    default_routine = "svi"
    variational_guide = True  # no latent sites, an empty guide: every ELBO is log p(x), SVI is maximum likelihood
    max_plate_nesting = 1
    # What fused_loss and the Pyro model compute -log p(x) from; a subclass that redefines one of them
    # without its own fused_loss is fitted through Pyro.
    fused_depends = ("model", "guide", "likelihood", "_pixel_dist", "logits", "net_input", "observed",
                     "pixel_log_probs", "log_prob", "log_prior", "class_log_prior", "num_data", "_labels")
    #: Images per forward pass when no gradient is needed (validation, evaluation): small batches keep
    #: the activation maps in cache; 500 MNIST images at once were 4x slower per image on a 2-core CPU.
    eval_chunk: int = 64

    def __init__(self, spec: PixelModelSpec, info: DataInfo) -> None:
        super().__init__(spec, info)
        shape = tuple(info.event_shape)
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(
                f"{spec.family} models one-channel images of shape (1, H, W); the data have event shape "
                f"{shape}. Use grayscale images (data.name mnist, digits or images)"
            )
        self.event_shape = shape
        self.height, self.width = shape[1], shape[2]
        kind = spec.likelihood.kind
        if kind == "auto":
            kind = "bernoulli" if info.kind == "binary" else "categorical"
        if kind == "bernoulli" and info.kind != "binary":
            raise ValueError(
                "likelihood.kind is 'bernoulli' but the data are intensities (data.binarize: none); set "
                "data.binarize to 'dynamic' or 'static', or likelihood.kind to 'categorical'"
            )
        if kind == "categorical" and info.kind == "binary":
            raise ValueError(
                "likelihood.kind is 'categorical' but the data are binarized; set data.binarize: none for "
                "8-bit grey values, or likelihood.kind to 'bernoulli'"
            )
        if kind == "bernoulli" and (spec.likelihood.levels is not None or spec.likelihood.scale is not None):
            raise ValueError("likelihood.levels and likelihood.scale apply to the categorical likelihood of grey values; "
                             "the data are binarized, so the likelihood is bernoulli: drop them or set data.binarize: none")
        self.kind = kind
        self.levels, self.scale = 2, 1.0
        if kind == "categorical":
            name = spec.data.name
            self.levels = spec.likelihood.levels or (17 if name == "digits" else 256)
            self.scale = float(spec.likelihood.scale or {"mnist": 256, "digits": 16}.get(name, self.levels - 1))
        self.num_classes: int | None = None
        if spec.conditional:
            if not info.num_classes:
                raise ValueError(
                    "conditional: true needs labelled data (mnist, digits, an npz with y, or an image folder "
                    "with one sub-folder per class); these data have no labels"
                )
            self.num_classes = int(info.num_classes)
        self._num_data = spec.prior.num_data or info.n_train
        self.net = self.build_net(1 if kind == "bernoulli" else self.levels, self.num_classes)
        if self.num_classes is not None:
            # log p(y) up to a constant; its maximum-likelihood value is the empirical class frequency.
            self.class_logits = nn.Parameter(torch.zeros(self.num_classes))

    def build_net(self, n_out: int, num_classes: int | None) -> nn.Module:
        raise NotImplementedError

    # -- data <-> network ----------------------------------------------------------------------
    def net_input(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel values in [-1, 1]: binary 0/1 or level / (levels - 1)."""
        if self.kind == "bernoulli":
            return 2.0 * x - 1.0
        return 2.0 * (x * self.scale) / (self.levels - 1) - 1.0

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        """The value of the observed site: x itself (0/1) for Bernoulli, integer levels for Categorical;
        a ValueError, naming the fix, for values the likelihood cannot have produced."""
        if self.kind == "bernoulli":
            if not torch.all((x == 0) | (x == 1)):
                bad = x[(x != 0) & (x != 1)][0].item()
                raise ValueError(
                    f"the Bernoulli likelihood needs binary pixels (0 or 1), got a value {bad:g}; set "
                    "data.binarize to 'dynamic' or 'static'"
                )
            return x
        k = torch.round(x * self.scale)
        if (k - x * self.scale).abs().max() > 1e-3 or k.min() < 0 or k.max() > self.levels - 1:
            raise ValueError(
                f"the Categorical likelihood with {self.levels} levels and scale {self.scale:g} needs "
                f"intensities k / {self.scale:g} for integers k in 0..{self.levels - 1}; these data are not. "
                "Set likelihood.levels and likelihood.scale to how the data were quantized"
            )
        return k.long()

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The network's output for every pixel in one pass: (n, 1, H, W) Bernoulli logits or
        (n, levels, H, W) Categorical logits of p(x_i | x_<i[, y])."""
        return self.net(self.net_input(x), y)

    def _pixel_dist(self, out: torch.Tensor) -> dist.Distribution:
        if self.kind == "bernoulli":
            return dist.Bernoulli(logits=out)
        return dist.Categorical(logits=out.permute(0, 2, 3, 1).unsqueeze(1))

    def likelihood(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        """p(x | [y]) as one distribution over whole images (batch shape (n,), event shape (1, H, W)),
        its parameters computed from the observed x itself: the masks make this the autoregressive
        product."""
        return self._pixel_dist(self.logits(x, y)).to_event(3)

    def pixel_log_probs(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x_i | x_<i[, y]) for every pixel, shape (n, 1, H, W)."""
        out = self.logits(x, y)
        obs = self.observed(x)
        if self.kind == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, obs, reduction="none")
        return torch.log_softmax(out, dim=1).gather(1, obs)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(x) (log p(x | y) when conditional), per example, in nats."""
        n, c = x.shape[0], self.eval_chunk
        if torch.is_grad_enabled() or n <= c:
            return self.pixel_log_probs(x, y).sum((1, 2, 3))
        return torch.cat([self.pixel_log_probs(x[s : s + c], None if y is None else y[s : s + c]).sum((1, 2, 3))
                          for s in range(0, n, c)])

    def class_log_prior(self) -> torch.Tensor:
        return torch.log_softmax(self.class_logits, 0)

    # -- the weight prior (MAP) ----------------------------------------------------------------
    def log_prior(self) -> torch.Tensor:
        """log p(theta) under Normal(0, scale^2) on every parameter (zero without a prior)."""
        if self.spec.prior.kind == "none":
            return self._zero()
        s = self.spec.prior.scale
        params = list(self.parameters())
        count = sum(p.numel() for p in params)
        sq = sum(p.pow(2).sum() for p in params)
        return -0.5 * sq / s**2 - count * (math.log(s) + 0.5 * math.log(2 * math.pi))

    def num_data(self) -> int:
        """N of log p(theta) / N: ``prior.num_data`` or the training-set size the model was built for."""
        if self._num_data is None:
            raise SpecError("prior.num_data: the model was built without the size of its training set "
                            "(DataInfo.n_train); set prior.num_data to the number of training examples")
        return self._num_data

    def _zero(self) -> torch.Tensor:
        return next(self.net.parameters()).new_zeros(())

    # -- Pyro model and guide ------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[0]
        if self.spec.prior.kind == "normal":
            # SVI scales the model by 1/n, so this is log p(theta) / N per example: the MAP objective.
            pyro.factor("weight_prior", self.log_prior() * (n / self.num_data()))
        with pyro.plate("data", n):
            if self.num_classes is not None:
                y = self._labels(y, n)
                pyro.sample("y", dist.Categorical(logits=self.class_logits.expand(n, -1)), obs=y)
            return pyro.sample("x", self.likelihood(x, y), obs=self.observed(x))

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Empty: there are no latent variables, so the ELBO is log p(x) exactly."""
        return None

    @classmethod
    def svi_objective(cls, spec: Any) -> str:
        """No latent variable, an empty guide: the loss is minus log p(x) exactly (with -log p(y) for a
        conditional model), less log p(theta) / N with a weight prior (MAP)."""
        return SVI_MAP if spec.prior.kind == "normal" else SVI_EXACT

    def _labels(self, y: torch.Tensor | None, n: int) -> torch.Tensor:
        if y is None:
            raise ValueError("this model is class-conditional (conditional: true): it needs the labels y")
        if y.shape != (n,):
            raise ValueError(f"labels y must have shape ({n},), got {tuple(y.shape)}")
        return y

    def fused_loss(self, x: torch.Tensor, elbo: Bound | str = "trace", num_particles: int = 1,
                   y: torch.Tensor | None = None) -> torch.Tensor:
        """Minus the summed objective of a batch without Pyro's tracing, equal to every bound of
        :data:`ppgen.bounds.BOUNDS` on this model with the empty guide: -sum log p(x) (and -log p(y) for a
        conditional model), minus the batch's share of the log weight prior for MAP."""
        # Without latent variables every particle of every bound equals log p(x): which bound, and how
        # many particles, change nothing (an unknown bound is still refused).
        as_bound(elbo, num_particles)
        loss = -self.log_prob(x, y).sum()
        if self.num_classes is not None:
            loss = loss - self.class_log_prior()[self._labels(y, x.shape[0])].sum()
        if self.spec.prior.kind == "normal":
            loss = loss - self.log_prior() * (x.shape[0] / self.num_data())
        return loss

    # -- exact likelihood and classification ---------------------------------------------------
    def likelihood_is_discrete(self) -> bool:
        """Always: a Bernoulli of binary pixels or a Categorical over grey levels."""
        return True

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, k: int = 1000, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact per-example log p(x) in nats (log p(x | y) for a conditional model given y; without y
        the marginal log sum_y p(x | y) p(y)); the standard errors are zeros. ``k`` is unused."""
        if self.num_classes is None or y is not None:
            ll = self.log_prob(x, y)
        else:
            ll = torch.logsumexp(self.class_log_likelihoods(x) + self.class_log_prior(), dim=1)
        return ll, torch.zeros_like(ll)

    @torch.no_grad()
    def class_log_likelihoods(self, x: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
        """log p(x | y) for every class y, shape (n, num_classes)."""
        if self.num_classes is None:
            raise ValueError("class_log_likelihoods needs a class-conditional model (conditional: true)")
        out = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            cols = [self.log_prob(xb, torch.full((xb.shape[0],), k, dtype=torch.long, device=xb.device))
                    for k in range(self.num_classes)]
            out.append(torch.stack(cols, dim=1))
        return torch.cat(out)

    @torch.no_grad()
    def class_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """log p(y | x) by Bayes' rule, shape (n, num_classes)."""
        joint = self.class_log_likelihoods(x) + self.class_log_prior()
        return joint - torch.logsumexp(joint, dim=1, keepdim=True)

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """For a conditional model with labels: ``bayes_accuracy`` (argmax_y p(x | y) p(y) against the
        labels) and the marginal NLL -log p(x) in nats and bits/dim, comparable with unconditional runs."""
        if self.num_classes is None or y is None:
            return {}
        joint = self.class_log_likelihoods(x) + self.class_log_prior()
        marginal = torch.logsumexp(joint, dim=1).double()
        nll = float(-marginal.mean())
        return {
            "bayes_accuracy": float((joint.argmax(1) == y).double().mean()),
            "marginal_nll_nats": nll,
            "marginal_bits_per_dim": nll / (self.height * self.width * math.log(2)),
        }

    def inference_data(self, data: Dataset, metrics: list[dict[str, Any]], n_obs: int = 16, draws: int = 1000,
                       seed: int = 0) -> Any:
        """ArviZ data of the first ``n_obs`` test images: the class drawn from p(y | x) for a conditional
        model (:func:`~ppgen.models.autoregressive.idata.class_inference_data`), else the per-pixel
        log-likelihoods and replicated images
        (:func:`~ppgen.models.autoregressive.idata.predictive_inference_data`)."""
        if self.num_classes is None:
            return predictive_inference_data(self, data, metrics, n_obs=n_obs, seed=seed)
        return class_inference_data(self, data, metrics, n_obs=n_obs, draws=draws, seed=seed)

    # -- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, fast: bool = True) -> torch.Tensor:
        """``n`` images drawn pixel by pixel, shape (n, 1, H, W), in the data's units (0/1 or
        level / scale). A conditional model draws y ~ p(y) unless ``y`` is given. ``fast`` picks the
        cached sampler; the plain one re-runs the network for every pixel. Both give the same images
        for the same random state."""
        if self.num_classes is not None:
            if y is None:
                y = dist.Categorical(logits=self.class_logits).sample((n,))
            y = self._labels(y.to(self.device), n)
        x = torch.zeros(n, *self.event_shape, device=self.device)
        return self._generate(x, 0, y, fast)

    @torch.no_grad()
    def complete(self, x: torch.Tensor, rows: int | None = None, y: torch.Tensor | None = None,
                 fast: bool = True) -> torch.Tensor:
        """Keep the first ``rows`` rows of each image (default: the upper half) and draw the rest from
        p(x_rest | x_kept[, y]). A conditional model without ``y`` first draws y from its exact posterior
        given the kept rows, p(y | x_kept), which the autoregressive order makes exact."""
        rows = self.height // 2 if rows is None else rows
        if not 0 <= rows < self.height:
            raise ValueError(f"rows must be in 0..{self.height - 1} (rows kept from the top), got {rows}")
        x = x.detach().to(self.device).clone().reshape(-1, *self.event_shape)
        self.observed(x)
        start = rows * self.width
        x[:, :, rows:, :] = 0.0
        if self.num_classes is not None:
            if y is None:
                y = dist.Categorical(logits=self.prefix_class_posterior(x, start)).sample()
            y = self._labels(y.to(self.device), x.shape[0])
        return self._generate(x, start, y, fast)

    @torch.no_grad()
    def prefix_class_posterior(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """log p(y | x_1..x_{start-1}): the first ``start`` pixels' log-likelihood under each class
        (exact: a prefix of the autoregressive product) plus log p(y), normalised."""
        n = x.shape[0]
        keep = torch.zeros(self.height * self.width, device=x.device)
        keep[:start] = 1.0
        keep = keep.reshape(1, 1, self.height, self.width)
        cols = []
        for k in range(self.num_classes or 0):
            lp = self.pixel_log_probs(x, torch.full((n,), k, dtype=torch.long, device=x.device))
            cols.append((lp * keep).sum((1, 2, 3)))
        joint = torch.stack(cols, 1) + self.class_log_prior()
        return joint - torch.logsumexp(joint, 1, keepdim=True)

    def _generate(self, x: torch.Tensor, start: int, y: torch.Tensor | None, fast: bool) -> torch.Tensor:
        n, h, w = x.shape[0], self.height, self.width
        # One uniform per pixel, drawn up front and turned into a value by the inverse CDF: the fast
        # and the plain path then consume identical randomness and draw identical images.
        u = torch.rand(n, h, w, device=x.device)
        net = self.net
        stepper: Stepper | None = net.stepper(self.net_input(x), y, start) if fast else None
        for idx in range(start, h * w):
            r, c = divmod(idx, w)
            if stepper is not None:
                out = stepper.logits_at(r, c)
            else:
                out = net(self.net_input(x), y)[:, :, r, c]
            value = self._draw(out, u[:, r, c])
            x[:, 0, r, c] = value
            if stepper is not None:
                stepper.set_pixel(r, c, self.net_input(value).unsqueeze(1))
        return x

    def _draw(self, out: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """A pixel value from (n, K) logits and (n,) uniforms by the inverse CDF."""
        if self.kind == "bernoulli":
            return (u < torch.sigmoid(out[:, 0])).to(out.dtype)
        cdf = torch.softmax(out, dim=1).cumsum(1)
        k = (cdf < u.unsqueeze(1)).sum(1).clamp(max=self.levels - 1)
        return k.to(out.dtype) / self.scale
