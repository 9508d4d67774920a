"""What the numbers a routine records during training are: each quantity's axis label with its unit, and
the kind and label of the training ``loss`` (an exact negative log-likelihood, a bound, a MAP objective, a
discriminator's loss, ...) from what the routine and the family declare. The training curves
(:mod:`ppgen.plots.curves`), the GAN's ``losses.png`` (:mod:`ppgen.plots.gan`) and ``ppgen compare``
(:mod:`ppgen.evaluation.compare`) label their axes with them; a panel's title is its label without the
unit (:func:`metric_title`).
"""

from __future__ import annotations

from typing import Any, NamedTuple


#: What a quantity recorded during training is, with its unit: the y-axis labels of :func:`training_curves`.
#: :func:`metric_labels` adds what depends on the routine (the meaning of ``loss``).
METRIC_LABELS: dict[str, str] = {
    "loss": "training loss",
    "lr": "learning rate",
    "grad_norm": "gradient norm (before clipping)",
    "recon_error": "squared reconstruction error per example",
    "pseudo_loglik": "pseudo-log-likelihood (nats per example)",
    "free_energy": "free energy of the data (nats per example)",
    "free_energy_gap": "free energy, data minus model samples (nats)",
    "accept_rate": "acceptance rate (mean of the block)",
    "divergences": "divergent transitions (count per block)",
    "step_size": "step size (mean over chains)",
    "draws": "draws per chain (so far)",
    "rhat_max": "largest split R-hat",
    "log_lik": "log-likelihood (nats per example)",
    "iterations": "iterations",
    # adversarial training; the units depend on the loss (:func:`adversarial_labels`)
    "g_loss": "generator loss (nats or critic units)",
    "d_real": "mean D(x) on data (probability or critic score)",
    "d_fake": "mean D(G(z)) on samples (probability or critic score)",
    "gp": "gradient penalty (squared gradient norm of D, before its weight)",
    "ks": "KS distance of samples to held-out data (two-sample, 0 to 1)",
}


def metric_title(label: str) -> str:
    """A panel's title: the quantity's label without its unit in brackets (``"generator loss"`` for
    ``"generator loss (nats, binary cross-entropy)"``); the unit stays on the axis."""
    return label.split(" (", 1)[0]


class LossKind(NamedTuple):
    """What the ``loss`` a routine records is: ``kind``, the kind of number (losses of one kind measure the
    same thing, so they may share an axis: :data:`LOSS_KINDS`), and ``label``, its axis label with the unit
    (losses with one label may share an axis)."""

    kind: str
    label: str


#: The kinds of training loss, as :func:`loss_kind` names them.
LOSS_KINDS = {
    "exact": "exact negative log-likelihood",
    "bound": "bound: minus a lower bound on log p(x)",
    "map": "MAP objective: minus the log posterior density",
    "log_joint": "minus the log joint density at posterior draws",
    "adversarial": "discriminator loss (not a likelihood)",
    "pseudo": "minus a pseudo-log-likelihood",
    "reconstruction": "reconstruction error",
    "other": "training loss",
}


def loss_kind(recipe: Any, spec: Any = None) -> LossKind:
    """The kind and label of the ``loss`` recorded by ``recipe``'s routine on a model of ``spec``. For SVI
    the family declares what minus its objective is (:meth:`ppgen.models.base.Family.svi_objective`): minus
    the ELBO or the IWAE bound for a family with latent variables, minus log p(x) exactly for one without
    (a PixelCNN), minus the log posterior density with a prior on the weights."""
    routine = getattr(recipe, "routine", None)
    if routine == "svi":
        objective = _svi_objective(spec)
        if objective == "exact":
            return LossKind(LOSS_KINDS["exact"], "minus the log-likelihood, exact (nats per example)")
        if objective == "map":
            return LossKind(LOSS_KINDS["map"], "minus log-likelihood minus log prior / N (nats per example)")
        bound = "minus the IWAE bound" if getattr(recipe, "elbo", "trace") == "iwae" else "minus the ELBO"
        return LossKind(LOSS_KINDS["bound"], f"{bound} (nats per example)")
    if routine in ("enum_svi", "em"):
        # a point mass on every parameter and the discrete latents summed out: the ELBO is the log joint
        return LossKind(LOSS_KINDS["map"], "minus log posterior density (nats per example)")
    if routine == "nuts":
        return LossKind(LOSS_KINDS["log_joint"], "minus log joint density (nats per example)")
    if routine == "adversarial":
        label = adversarial_labels(getattr(recipe, "loss", "nonsaturating"))["loss"]
        return LossKind(LOSS_KINDS["adversarial"], label)
    if routine in ("cd", "pcd", "layerwise"):
        real = spec is not None and (getattr(spec, "family", None) == "gbrbm" or getattr(spec, "visible", None) == "gaussian")
        if real:
            return LossKind(LOSS_KINDS["reconstruction"], METRIC_LABELS["recon_error"])
        return LossKind(LOSS_KINDS["pseudo"], "minus pseudo-log-likelihood (nats per example)")
    return LossKind(LOSS_KINDS["other"], METRIC_LABELS["loss"])


def _svi_objective(spec: Any) -> str:
    """What the family of ``spec`` declares minus its SVI objective to be; a bound without a spec."""
    if spec is None or getattr(spec, "family", None) is None:
        return "bound"
    from ppgen.registry import family

    return family(spec.family).svi_objective(spec)


def metric_labels(recipe: Any, spec: Any = None) -> dict[str, str]:
    """The meaning of the numbers a routine records, from its recipe (``routine``, ``elbo``, ``loss``) and
    the model's spec: ``loss`` as :func:`loss_kind` labels it (minus the ELBO in nats for SVI on a family
    with latent variables, minus the exact log-likelihood for one without, the discriminator's loss for a
    GAN, minus the pseudo-log-likelihood (or the reconstruction error for real-valued units) for
    contrastive divergence, ...). A key ``"loss@layer1"`` applies to the records of layer 1 only (a deep
    belief net)."""
    routine = getattr(recipe, "routine", None)
    out: dict[str, str] = {"loss": loss_kind(recipe, spec).label} if routine is not None else {}
    if routine == "adversarial":
        out.update(adversarial_labels(getattr(recipe, "loss", "nonsaturating")))
    elif routine == "layerwise" and getattr(recipe, "propagate", "mean") == "mean":
        # the layers above the first see probabilities, scored by their reconstruction error
        for i in range(1, len(getattr(spec, "hidden", []) or [])):
            out[f"loss@layer{i}"] = METRIC_LABELS["recon_error"]
    elif routine == "nuts":
        out["step"] = "step (one block of draws)"
    return out


def adversarial_labels(loss: str | None) -> dict[str, str]:
    """The numbers adversarial training records (:mod:`ppgen.inference.adversarial`), labelled for its
    ``loss``: for the minimax and non-saturating losses both players' losses are binary cross-entropies in
    nats and D(x) is a probability; for the others they are in the critic's units and D(x) is a score.
    With ``loss`` None (not known) the units are those of :data:`METRIC_LABELS`."""
    if loss is None:
        return {"loss": LOSS_KINDS["adversarial"],
                **{k: METRIC_LABELS[k] for k in ("g_loss", "d_real", "d_fake", "gp")}}
    unit = "nats, binary cross-entropy" if loss in ("minimax", "nonsaturating") else f"{loss} loss, critic units"
    score = "probability" if loss in ("minimax", "nonsaturating") else "critic score"
    return {"loss": f"discriminator loss ({unit})", "g_loss": f"generator loss ({unit})",
            "d_real": f"mean D(x) on data ({score})", "d_fake": f"mean D(G(z)) on samples ({score})",
            "gp": METRIC_LABELS["gp"]}
