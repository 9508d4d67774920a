"""Programs with a label site: the guide's classifier q(y | x), its classification term, and Bayes' rule.

A program whose model has a site ``observed: y`` is a joint model p(x, y). Two classifiers come out of it:

- **Bayes' rule on the model**: argmax_y log p(x, y), where each log p(x, y) = log p(y) + log p(x | y) is
  estimated by importance sampling with the guide as proposal (:meth:`ProgramFamily.class_log_likelihoods`),
  exactly when the program has no continuous latent;
- **the guide's q(y | x)**, where the guide has a site y (Kingma et al. 2014's M2): argmax_y q(y | x).

The classification term of M2 (Kingma et al. 2014, eq. 9) adds alpha * -log q(y_n | x_n) for each labelled
example n to the loss; the svi routine's ``classify_weight`` is alpha.

References:
    Kingma, Rezende, Mohamed & Welling (2014), Semi-Supervised Learning with Deep Generative Models,
    NeurIPS; arXiv:1406.5298.
"""

from __future__ import annotations

from typing import Any

import torch

from ppgen.program import expr, sites
from ppgen.program.compiled import Program, Site
from ppgen.spec import SpecError


def guide_label_site(prog: Program) -> Site | None:
    """The guide's site for the labels (q(y | ...)), or None."""
    if prog.y_site is None:
        return None
    return prog.guide_by_name.get(prog.y_site.name)


def check_guide_classifier(prog: Program, where: str) -> Site:
    """The guide's label site, which must read the data x alone (networks of x, parameters, constants):
    q(y | x) is then one pass, with no draw of another latent."""
    if prog.y_site is None:
        raise SpecError(f"{where}: the program has no site observed: y, so there is no classifier q(y | x)")
    g = guide_label_site(prog)
    if g is None:
        raise SpecError(f"{where}: the guide has no site {prog.y_site.name} (q({prog.y_site.name} | x)); declare one, "
                        f"e.g. {prog.y_site.name}: {{dist: Categorical, logits: classifier}} with a network of x")
    x = prog.x_site.name
    for node in g.args.values():
        for ref in expr.references(node):
            if ref.name in prog.networks:
                bad = [i.site for i in prog.networks[ref.name][1] if i.site != x]
                if bad:
                    raise SpecError(f"{where}: guide.{g.name} reads {bad[0]} through the network {ref.name}; the "
                                    f"classifier q({g.name} | x) must read x alone")
            elif ref.name in prog.model_by_name and ref.name != x:
                raise SpecError(f"{where}: guide.{g.name} reads {ref.name}; the classifier q({g.name} | x) must read x alone")
    return g


def guide_class_log_probs(prog: Program, modules: tuple[Any, Any, Any], x: torch.Tensor) -> torch.Tensor:
    """log q(y = c | x) for every class c, shape (n, classes)."""
    g = check_guide_classifier(prog, "guide_accuracy")
    env = sites.Env(prog, modules)
    env.values[prog.x_site.name] = x
    d = sites.site_dist(g, sites.site_args(g, env), False)
    logits = d.logits
    return logits.expand(x.shape[0], logits.shape[-1]) if logits.dim() == 1 else logits


def classification_loss(prog: Program, modules: tuple[Any, Any, Any], x: torch.Tensor,
                        y: torch.Tensor | None) -> torch.Tensor:
    """The sum over the labelled examples of -log q(y_n | x_n) (hidden labels, below 0, add nothing)."""
    if y is None:
        return x.new_zeros(())
    mask = y >= 0
    if not bool(mask.any()):
        return x.new_zeros(())
    logq = guide_class_log_probs(prog, modules, x[mask])
    return -logq.gather(1, y[mask].long()[:, None]).sum()
