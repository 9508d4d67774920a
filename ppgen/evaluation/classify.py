"""Generative and discriminative classifiers: p(y | x) by Bayes' rule on a joint model p(x, y), by a
model's own q(y | x), and by a network trained on the labels alone.

The lecture's distinction: a discriminative model learns p(y | x); a generative one learns p(x, y), which
Bayes' rule turns into p(y | x) = p(x, y) / sum_c p(x, c). For a model with a label site,
:func:`classifier_metrics` reports

- ``bayes_accuracy``: the share of test examples whose label is argmax_c log p(x, y = c), each log p(x, c)
  estimated by importance sampling with the guide as proposal and ``k`` samples (exact when the model has
  no continuous latent), with ``bayes_k`` the k used;
- ``guide_accuracy``: argmax_c q(y = c | x), where the guide has a site for the labels (M2).

:class:`MLPClassifier` and :func:`train_mlp` are the discriminative side of the comparison: a network of the
same shape as a program's classifier q(y | x), trained by cross-entropy on the labelled examples only.

References:
    Ng & Jordan (2002), On Discriminative vs. Generative Classifiers, NeurIPS.
    Kingma, Rezende, Mohamed & Welling (2014), Semi-Supervised Learning with Deep Generative Models, NeurIPS.
    Schott, Rauber, Bethge & Brendel (2019), Towards the first adversarially robust neural network model on
    MNIST, ICLR (per-class VAEs as a Bayes classifier).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ppgen.spec import SpecError

#: Importance samples per example and class for ``bayes_accuracy`` unless told otherwise.
DEFAULT_BAYES_K = 20


def has_label_site(model: Any) -> bool:
    prog = getattr(model, "program", None)
    return prog is not None and prog.y_site is not None


@torch.no_grad()
def class_log_joint(model: Any, x: torch.Tensor, k: int, batch_size: int = 100) -> torch.Tensor:
    """log p(x, y = c) for every test example and class, shape (n, classes)."""
    out = []
    for start in range(0, x.shape[0], batch_size):
        out.append(model.class_log_likelihoods(x[start: start + batch_size], k=k))
    return torch.cat(out)


@torch.no_grad()
def guide_log_probs(model: Any, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """log q(y = c | x) of a program whose guide has a site for the labels, shape (n, classes)."""
    from ppgen.program.labels import guide_class_log_probs

    out = []
    for start in range(0, x.shape[0], batch_size):
        out.append(guide_class_log_probs(model.program, model._mods(), model._x_in(x[start: start + batch_size])))
    return torch.cat(out)


@torch.no_grad()
def classifier_metrics(model: Any, x: torch.Tensor, y: torch.Tensor | None, k: int | None = None) -> dict[str, Any]:
    """``bayes_accuracy`` (and ``bayes_k``) for a program with a label site and test labels,
    ``guide_accuracy`` where its guide has q(y | x); {} otherwise."""
    if not has_label_site(model) or y is None:
        if k is not None and not has_label_site(model):
            raise SpecError("bayes_k: only a program with a site observed: y is a classifier; leave it out")
        return {}
    if k is not None and k < 1:
        raise SpecError(f"bayes_k: must be at least 1 importance sample per example and class, got {k}")
    prog = model.program
    k = DEFAULT_BAYES_K if k is None else k
    y = y.to(x.device)
    out: dict[str, Any] = {}
    joint = class_log_joint(model, x, k)
    out["bayes_accuracy"] = float((joint.argmax(1) == y).double().mean())
    out["bayes_k"] = 1 if prog.exact else k
    if prog.y_site.name in prog.guide_by_name:
        from ppgen.program.labels import check_guide_classifier

        try:
            check_guide_classifier(prog, "guide_accuracy")
        except SpecError:
            return out  # q(y | ...) reads more than x: no classifier of x alone
        out["guide_accuracy"] = float((guide_log_probs(model, x).argmax(1) == y).double().mean())
    return out


# --------------------------------------------------------------------------- the discriminative baseline


class MLPClassifier(nn.Module):
    """p(y | x) by a multilayer perceptron of the flattened input: hidden ReLU layers, then class logits."""

    def __init__(self, d_in: int, hidden: list[int], classes: int) -> None:
        super().__init__()
        sizes = [d_in, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@torch.enable_grad()
def train_mlp(x: torch.Tensor, y: torch.Tensor, classes: int, *, hidden: list[int] | None = None, steps: int = 2000,
              batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-4, binarize: bool = True,
              seed: int = 0, device: str | torch.device = "cpu") -> MLPClassifier:
    """Train :class:`MLPClassifier` by cross-entropy on labelled examples (x, y) with Adam for ``steps``
    steps (whatever the number of examples, so that 100 labels get as many updates as 50,000); with
    ``binarize`` each batch is a fresh Bernoulli draw of the intensities, as the generative models see
    them. Deterministic given ``seed`` (batches are drawn on the CPU, then moved to ``device``); the
    caller's RNG is left as it was."""
    if y.min() < 0:
        raise SpecError("train_mlp: the labels must all be given (>= 0); pass the labelled examples only")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = MLPClassifier(x[0].numel(), hidden or [500], classes).to(device)
    x, y = x.cpu(), y.cpu()
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    n = x.shape[0]
    clf.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        xb = x[idx]
        if binarize:
            xb = torch.bernoulli(xb, generator=gen)
        loss = nn.functional.cross_entropy(clf(xb.to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return clf.eval()


@torch.no_grad()
def mlp_accuracy(clf: MLPClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    pred = torch.cat([clf(x[s: s + batch_size]).argmax(1) for s in range(0, x.shape[0], batch_size)])
    return float((pred == y).double().mean())
