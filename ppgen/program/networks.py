"""Networks of the model language: declared once, built from the shapes of the sites they read and of
the parameters their outputs feed.

A network reads one or more sites (their values flattened and joined; a Categorical label enters one-hot)
and produces one output or several named heads (``encoder.loc``, ``encoder.scale``), each of the shape of
the parameter it feeds. ``mlp`` and ``linear`` use :func:`ppgen.nets.blocks.mlp`; ``conv`` uses the convolutional
encoder of :mod:`ppgen.nets.blocks` when its first input is an image (further inputs join the flattened
features) and the convolutional decoder when its outputs are images. ``per: y`` gives an MLP one set of
weights for each class of the Categorical site ``y`` (:mod:`ppgen.nets.per_class`): y chooses the
network, it is not one of its input features.

Site values carry batch dimensions in front of the event (examples, particles, enumerated values); a
network broadcasts its inputs' batch dimensions, runs once on all of them flattened into one batch, and
puts them back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ppgen.nets.blocks import ConvDecoder, ConvEncoder, mlp
from ppgen.nets.per_class import PerClassMLP
from ppgen.spec import SpecError


@dataclass(frozen=True)
class InputSpec:
    site: str
    shape: tuple[int, ...]
    classes: int | None = None  # a Categorical label: one-hot of this many classes
    selects: bool = False  # the label that chooses the class's weights (``per: y``), not a feature

    @property
    def size(self) -> int:
        return 0 if self.selects else math.prod(self.shape) * (self.classes or 1)


class Network(nn.Module):
    """A declared network: ``forward(values)`` maps the input sites' values to a dict of heads."""

    #: an MLP over inputs of different batch shapes computes its first layer per input (see
    #: :meth:`_split_first_layer`); False joins the inputs first (the benchmark's reference)
    split_first_layer = True

    def __init__(self, name: str, kind: str, hidden: list[int], activation: str, inputs: list[InputSpec],
                 heads: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.name = name
        self.inputs = inputs
        self.heads = dict(heads)
        self.sizes = [math.prod(s) for s in self.heads.values()]
        out = sum(self.sizes)
        self.mode = "vector"
        at = f"networks.{name}"
        selectors = [i for i, s in enumerate(inputs) if s.selects]
        self.per = selectors[0] if selectors else None
        if self.per is not None:
            per = inputs[self.per]
            if kind not in ("mlp", "linear"):
                raise SpecError(f"{at}.per: one network per class is for kinds mlp and linear, not {kind!r}")
            if len(selectors) > 1 or per.classes is None or per.shape != ():
                raise SpecError(f"{at}.per: {per.site!r} must be one Categorical label (a scalar site with classes)")
            d_in = sum(i.size for i in inputs)
            self.core = PerClassMLP(per.classes, [d_in, out] if kind == "linear" else [d_in, *hidden, out], activation)
        elif kind in ("mlp", "linear"):
            d_in = sum(i.size for i in inputs)
            self.core = mlp([d_in, out] if kind == "linear" else [d_in, *hidden, out], activation)
        else:
            image = inputs[0].shape if len(inputs[0].shape) == 3 and inputs[0].classes is None else None
            if image is not None:
                if any(len(i.shape) == 3 for i in inputs[1:]):
                    raise SpecError(f"{at}: a conv network reads one image (its first input); further inputs must be vectors")
                self.mode = "conv_in"
                self.core = ConvEncoder(image, hidden, out, activation)
                extra = sum(i.size for i in inputs[1:])
                if extra:
                    self.core.head = nn.Linear(self.core.head.in_features + extra, out)
            else:
                shapes = set(self.heads.values())
                if len(shapes) != 1 or len(next(iter(shapes))) != 3:
                    raise SpecError(
                        f"{at}: a conv network needs an image as its first input (an encoder) or image-shaped "
                        f"outputs of one shape (a decoder); its inputs are {[list(i.shape) for i in inputs]} and its "
                        f"outputs {[list(s) for s in self.heads.values()]}")
                c, h, w = next(iter(shapes))
                self.mode = "conv_out"
                self.core = ConvDecoder(sum(i.size for i in inputs), hidden, (c * len(self.heads), h, w), activation)
                self._channels = c

    def _flat(self, spec: InputSpec, t: torch.Tensor) -> torch.Tensor:
        """One input's values with their event flattened (a label one-hot first)."""
        if spec.classes is not None:
            t = nn.functional.one_hot(t.long(), spec.classes).to(torch.get_default_dtype())
            ev = len(spec.shape) + 1
        else:
            ev = len(spec.shape)
            if not t.is_floating_point():
                t = t.to(torch.get_default_dtype())
        return t.reshape(*t.shape[: t.dim() - ev], -1)

    def _split_first_layer(self, flat: list[torch.Tensor], batch: torch.Size) -> torch.Tensor:
        """The MLP on inputs of different batch shapes (an image x of shape (B, D) beside the enumerated
        classes of y, (C, 1, K)) without copying the smaller ones to the joint batch: the first layer is
        linear, W [x; y] + b = W_x x + W_y y + b, so each input's part is computed at its own batch
        shape and the parts are broadcast and added; the rest of the network runs on the joint batch. The
        same function as joining the inputs first (the tests compare both), with C times fewer products
        for x."""
        first = self.core[0]
        parts, start = [], 0
        for i, f in enumerate(flat):
            width = f.shape[-1]
            w = first.weight[:, start:start + width]
            parts.append(torch.nn.functional.linear(f, w, first.bias if i == 0 else None))
            start += width
        h = parts[0]
        for p in parts[1:]:
            h = h + p
        h = h.expand(*batch, h.shape[-1]).reshape(-1, h.shape[-1])
        return self.core[1:](h)

    def forward(self, values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        specs = self.inputs
        if self.mode == "conv_in":
            img = values[0]
            if not img.is_floating_point():
                img = img.to(torch.get_default_dtype())
            rest = [self._flat(s, v) for s, v in zip(specs[1:], values[1:])]
            batch = torch.broadcast_shapes(img.shape[:-3], *(r.shape[:-1] for r in rest))
            img = img.expand(*batch, *img.shape[-3:]).reshape(-1, *img.shape[-3:])
            feats = self.core.body(img)
            if rest:
                rest = [r.expand(*batch, r.shape[-1]).reshape(-1, r.shape[-1]) for r in rest]
                feats = torch.cat([feats, *rest], -1)
            out = self.core.head(feats)
        elif self.per is not None:
            label = values[self.per]
            flat = [self._flat(s, v) for s, v in zip(specs, values) if not s.selects]
            batch = torch.broadcast_shapes(label.shape, *(f.shape[:-1] for f in flat))
            n = math.prod(batch)
            joined = (torch.cat([f.expand(*batch, f.shape[-1]).reshape(n, f.shape[-1]) for f in flat], -1) if flat
                      else label.new_zeros(n, 0, dtype=torch.get_default_dtype()))
            out = self.core(joined, label.expand(batch).reshape(n))
        else:
            flat = [self._flat(s, v) for s, v in zip(specs, values)]
            if len(flat) == 1:
                batch = flat[0].shape[:-1]
                joined = flat[0].reshape(-1, flat[0].shape[-1])
                out = self.core(joined)
            else:
                batch = torch.broadcast_shapes(*(f.shape[:-1] for f in flat))
                if self.split_first_layer and self.mode == "vector" and any(f.shape[:-1] != batch for f in flat):
                    out = self._split_first_layer(flat, batch)
                else:
                    joined = torch.cat([f.expand(*batch, f.shape[-1]).reshape(-1, f.shape[-1]) for f in flat], -1)
                    out = self.core(joined)
        if self.mode == "conv_out":
            c = self._channels
            return {name: out[:, i * c:(i + 1) * c].reshape(*batch, *shape)
                    for i, (name, shape) in enumerate(self.heads.items())}
        if len(self.heads) == 1:
            name, shape = next(iter(self.heads.items()))
            return {name: out.reshape(*batch, *shape)}
        res, start = {}, 0
        for (name, shape), size in zip(self.heads.items(), self.sizes):
            res[name] = out[:, start:start + size].reshape(*batch, *shape)
            start += size
        return res
