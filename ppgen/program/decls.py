"""The sections of a program's spec: a declared network, a learnable parameter, a sample site and the
encoder of the automatic guide (strict: an unknown key is an error naming it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from ppgen.nets.blocks import Activation
from ppgen.program.dequantize import DequantizeDecl
from ppgen.spec import Strict

Constraint = Literal["real", "positive", "unit_interval", "simplex", "lower_cholesky"]


class NetworkDecl(Strict):
    """A network declared once: its kind (``mlp``, ``conv`` or ``linear``, as in ``ppgen.nets.blocks``), the
    sites it reads (``inputs``), hidden sizes and activation. Its outputs ("heads", ``encoder.loc``) take
    the shapes of the parameters they feed; ``outputs`` gives them explicitly where that cannot be
    inferred (a head used inside a matrix product). ``per: y`` makes one network (``mlp`` or ``linear``)
    for each class of the Categorical site ``y``, chosen by its value: one model per class."""

    kind: Literal["mlp", "conv", "linear"] = "mlp"
    inputs: list[str] = Field(min_length=1)
    hidden: list[int] = Field(default_factory=lambda: [400])
    activation: Activation = "relu"
    outputs: dict[str, list[int]] | None = None
    per: str | None = None


class ParamDecl(Strict):
    """A learnable parameter: its shape, its starting value (a number or nested list, in the
    constrained space), optional noise of standard deviation ``init_std`` added to the unconstrained
    value (to break symmetry), and its constraint."""

    shape: list[int] = Field(default_factory=list)
    init: float | list[Any] = 0.0
    init_std: float = Field(0.0, ge=0)
    constraint: Constraint = "real"


class SiteDecl(Strict):
    """One sample site. The distribution's parameters and options are further keys."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, protected_namespaces=(),
                              validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    dist: str
    shape: list[int] | None = None
    observed: Literal["x", "y"] | None = None
    global_: bool = Field(False, alias="global")
    enumerate: Literal["parallel"] | None = None
    dequantize: Literal["uniform"] | DequantizeDecl | None = None


class AutoNetworkDecl(Strict):
    """The encoder that ``guide: auto`` and ``guide: delta`` build for the local latent sites."""

    kind: Literal["mlp", "conv", "linear"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [400])
    activation: Activation = "relu"
