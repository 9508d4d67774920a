"""The MNIST feature classifier whose penultimate layer (128 features) the sample-quality metrics of
MNIST-shaped images are measured in (:mod:`ppgen.evaluation.quality`): its network, its deterministic
training, and its cache in ``cache_dir()/classifier/`` (Inception features cannot be downloaded here and do
not suit digits).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Version of the classifier's architecture and training recipe; a new one trains a new cache file.
CLASSIFIER_VERSION = 1
FEATURE_DIM = 128
#: The accuracy on MNIST's test split below which a trained classifier is refused.
MIN_ACCURACY = 0.99


class DigitClassifier(nn.Module):
    """A small CNN for 1x28x28 digits: three 3x3 convolution stages (32, 64, 128 channels) with batch
    norm, ReLU and 2x2 max pooling, then a 128-unit ReLU layer, the features, and a linear layer to
    the 10 class logits. About 7.5M multiply-adds per image."""

    def __init__(self) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

        self.body = nn.Sequential(*stage(1, 32), *stage(32, 64), *stage(64, 128), nn.Flatten(),
                                  nn.Linear(128 * 3 * 3, FEATURE_DIM), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


@torch.no_grad()
def embed(clf: DigitClassifier, x: torch.Tensor, batch_size: int = 1000,
          bar: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n, 128) and predicted labels (n,) of images (n, 1, 28, 28), clamped to [0, 1]; ``bar``, a
    :class:`ppgen.progress.Phase`, is advanced by each batch."""
    was = clf.training
    clf.eval()
    feats, labels = [], []
    try:
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].float().clamp(0, 1).reshape(-1, 1, 28, 28)
            f = clf.features(xb)
            feats.append(f)
            labels.append(clf.head(f).argmax(1))
            if bar is not None:
                bar.advance(xb.shape[0])
    finally:
        clf.train(was)
    return torch.cat(feats), torch.cat(labels)


def _augment(x: torch.Tensor, gen: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random translations by up to ``shift`` pixels and, for half of the images, a Bernoulli
    binarization, so the features serve grey samples (GANs, VAE means) and binary ones (RBMs) alike."""
    n, side = x.shape[0], 28 + 2 * shift
    padded = nn.functional.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(28))[:, None, :, None].expand(n, 1, 28, side)
    cols = (dx[:, None] + torch.arange(28))[:, None, None, :].expand(n, 1, 28, 28)
    out = padded.gather(2, rows).gather(3, cols)
    binar = torch.rand(n, generator=gen) < 0.5
    out[binar] = torch.bernoulli(out[binar], generator=gen)
    return out


@torch.enable_grad()
def train_classifier(train_x: torch.Tensor, train_y: torch.Tensor, *, epochs: int = 3, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, progress: bool = False) -> DigitClassifier:
    """Train a :class:`DigitClassifier` from scratch: Adam with a one-cycle learning rate, augmented
    batches (:func:`_augment`), all randomness from ``seed``, so the same data give the same weights.
    Gradients are on even when the caller is inside ``torch.no_grad()`` (as ``ppgen evaluate`` is)."""
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        clf = DigitClassifier()
        gen = torch.Generator().manual_seed(seed)
        n = train_x.shape[0]
        steps = epochs * max(1, n // batch_size)
        opt = torch.optim.Adam(clf.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        clf.train()
        step = 0
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for b in range(max(1, n // batch_size)):
                idx = perm[b * batch_size : (b + 1) * batch_size]
                xb = _augment(train_x[idx].float(), gen)
                loss = nn.functional.cross_entropy(clf(xb), train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if progress and step % 100 == 0:
                    print(f"classifier: epoch {epoch + 1}/{epochs}, step {step}/{steps}, loss {float(loss.detach()):.4f}",
                          file=sys.stderr)
    finally:
        torch.set_rng_state(state)
    return clf.eval()


def accuracy(clf: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((embed(clf, x)[1] == y).double().mean())


def classifier_path() -> Path:
    from ppgen.data import cache_dir

    return cache_dir() / "classifier" / f"mnist-cnn-v{CLASSIFIER_VERSION}.pt"


_CLASSIFIER: dict[str, DigitClassifier] = {}


def classifier(*, train: bool = True, progress: bool = True) -> DigitClassifier:
    """The cached MNIST feature classifier, trained on first use (a few minutes on 2 CPU cores) on
    MNIST's 50,000 training images and checked to reach :data:`MIN_ACCURACY` on its 10,000 test images.

    The weights go to ``cache_dir()/classifier/mnist-cnn-v1.pt`` with a JSON record beside them (test
    accuracy, seed, SHA-256 of the weights, which is checked on every load). With ``train=False`` a
    missing cache is an error instead.
    """
    from ppgen.data.sources import atomic_write, sha256_file
    from ppgen.spec import SpecError

    path = classifier_path()
    key = str(path)
    if key in _CLASSIFIER:
        return _CLASSIFIER[key]
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if sha256_file(path) != meta.get("sha256"):
            raise SpecError(f"{path}: the classifier's weights do not match the SHA-256 in {meta_path}; delete both "
                            "files and ppgen trains the classifier again")
        clf = DigitClassifier()
        clf.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        _CLASSIFIER[key] = clf.eval()
        return _CLASSIFIER[key]
    if not train:
        raise SpecError(f"{path}: the MNIST feature classifier is not cached; run ppgen.evaluation.feature_classifier.classifier() once")
    if "PYTEST_CURRENT_TEST" in os.environ:
        # Training takes minutes and needs MNIST (maybe a download): never inside the test suite.
        raise RuntimeError(f"{path} is not cached and tests must not train it; pass feature_net= to "
                           "sample_metrics (e.g. an untrained DigitClassifier) or use non-MNIST-shaped data")
    from ppgen import data as data_mod

    mnist = data_mod.load(name="mnist", binarize="none")
    if progress:
        print(f"training the MNIST feature classifier once (cached at {path})", file=sys.stderr)
    t0 = time.perf_counter()
    clf = train_classifier(mnist.train_x, mnist.train_y, progress=progress)
    seconds = time.perf_counter() - t0
    acc = accuracy(clf, mnist.test_x, mnist.test_y)
    acc_bin = accuracy(clf, mnist.split("test")[0] if mnist.binarize != "none" else torch.bernoulli(
        mnist.test_x, generator=torch.Generator().manual_seed(3)), mnist.test_y)
    if acc < MIN_ACCURACY:
        raise RuntimeError(f"the MNIST feature classifier reached {acc:.4f} test accuracy, below {MIN_ACCURACY}; "
                           "it was not cached (report this: the training recipe is meant to be deterministic)")
    atomic_write(path, lambda tmp: torch.save(clf.state_dict(), tmp))
    meta = {
        "version": CLASSIFIER_VERSION,
        "test_accuracy": acc,
        "test_accuracy_binarized": acc_bin,
        "seed": 0,
        "train_seconds": seconds,
        "mnist_checksum": mnist.checksum,
        "torch": torch.__version__,
        "sha256": sha256_file(path),
    }
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
    if progress:
        print(f"classifier: test accuracy {acc:.4f} (binarized {acc_bin:.4f}), {seconds:.0f} s", file=sys.stderr)
    _CLASSIFIER[key] = clf
    return clf
