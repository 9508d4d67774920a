"""Expressions of the model language: parsed into a small syntax tree, evaluated from a whitelist.

A parameter of a site may be a small arithmetic expression of earlier sites, learnable parameters and
network outputs, such as ``z @ W.T + b`` or ``softplus(encoder.scale) + 1e-4``. The text is parsed with
Python's :mod:`ast` (``mode="eval"``) and converted into the node types below; anything that is not one of
them (a lambda, a comprehension, a string, a subscript, an attribute other than a network head or ``.T``,
a call of a name outside :data:`FUNCTIONS`, a keyword argument...) is refused when the spec is loaded.
Nothing is ever passed to ``eval`` or ``exec``, and no Python object is looked up by name: evaluation
walks the tree and applies the torch operation each node names.

Values carry their event rank: a site's value is a tensor whose last ``e`` dimensions are one example's
value (the event) and whose leading dimensions are batch dimensions (examples, particles, enumerated
values). Elementwise operations line up event dimensions with event dimensions and batch with batch;
``@`` multiplies the event parts (vector-matrix, matrix-vector, matrix-matrix or a dot product) and
``.T`` transposes the last two event dimensions, so ``z @ W.T`` means the same for one example and for a
batch of them.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Callable, Union

import torch
import torch.nn.functional as F

from ppgen.spec import SpecError

#: Longest expression text accepted, and most nodes in one tree.
MAX_LENGTH = 1000
MAX_NODES = 200


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Ref:
    """A name: a site, a learnable parameter, a network's whole output, or a network head
    (``head`` set: ``encoder.loc``)."""

    name: str
    head: str | None = None


@dataclass(frozen=True)
class Unary:
    op: str  # "neg" | "pos" | "T"
    operand: "Node"


@dataclass(frozen=True)
class Binary:
    op: str  # "+", "-", "*", "/", "**", "@"
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple["Node", ...]


Node = Union[Num, Ref, Unary, Binary, Call]

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.MatMult: "@"}


@dataclass(frozen=True)
class Fn:
    """A whitelisted function: how many arguments, which of them must be number literals, and what it
    does to (tensor, event rank) values."""

    arity: tuple[int, int]
    numeric: tuple[int, ...]
    doc: str


FUNCTIONS: dict[str, Fn] = {
    **{name: Fn((1, 1), (), "elementwise") for name in (
        "exp", "log", "log1p", "expm1", "sqrt", "abs", "square", "softplus", "sigmoid", "logsigmoid", "tanh",
        "relu")},
    "softmax": Fn((1, 1), (), "over the last event dimension"),
    "log_softmax": Fn((1, 1), (), "over the last event dimension"),
    "sum": Fn((1, 1), (), "over all event dimensions"),
    "mean": Fn((1, 1), (), "over all event dimensions"),
    "clamp": Fn((3, 3), (1, 2), "clamp(v, low, high) with numbers low and high"),
    "maximum": Fn((2, 2), (), "elementwise"),
    "minimum": Fn((2, 2), (), "elementwise"),
    "onehot": Fn((2, 2), (1,), "onehot(label, K): a K-vector"),
    "cat": Fn((2, 16), (), "concatenate along the last event dimension"),
}

#: Names that mean a number.
CONSTANTS = {"pi": math.pi}

ALLOWED = ("numbers, names of sites, params and networks, network heads (net.head), + - * / ** @, unary -, "
           f".T, and the functions {', '.join(sorted(FUNCTIONS))}")


# --------------------------------------------------------------------------- parsing


def parse(text: str, where: str) -> Node:
    """The syntax tree of an expression; a :class:`SpecError` naming ``where`` for anything outside the
    language."""
    if not isinstance(text, str):
        raise SpecError(f"{where}: an expression must be text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise SpecError(f"{where}: the expression is {len(text)} characters long; at most {MAX_LENGTH} are accepted")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        msg = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        raise SpecError(f"{where}: {text!r} is not a valid expression ({msg})") from None
    count = [0]
    return _convert(tree.body, where, text, count)


def _refuse(where: str, text: str, what: str) -> SpecError:
    return SpecError(f"{where}: {what} is not allowed in an expression ({text!r}); allowed: {ALLOWED}")


def _convert(node: ast.AST, where: str, text: str, count: list[int]) -> Node:
    count[0] += 1
    if count[0] > MAX_NODES:
        raise SpecError(f"{where}: the expression has more than {MAX_NODES} parts; split it over sites")
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _refuse(where, text, f"the constant {v!r}")
        return Num(float(v))
    if isinstance(node, ast.Name):
        if node.id.startswith("_"):
            raise _refuse(where, text, f"the name {node.id!r} (names starting with _)")
        if node.id in FUNCTIONS:
            raise SpecError(f"{where}: {node.id!r} is a function; call it, e.g. {node.id}(...) ({text!r})")
        return Ref(node.id)
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise _refuse(where, text, f"the attribute {node.attr!r}")
        if node.attr == "T":
            return Unary("T", _convert(node.value, where, text, count))
        if isinstance(node.value, ast.Name) and not node.value.id.startswith("_"):
            return Ref(node.value.id, node.attr)
        raise _refuse(where, text, f"the attribute .{node.attr} (only network.head and .T)")
    if isinstance(node, ast.BinOp):
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise _refuse(where, text, f"the operator {type(node.op).__name__}")
        return Binary(op, _convert(node.left, where, text, count), _convert(node.right, where, text, count))
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            return Unary("neg", _convert(node.operand, where, text, count))
        if isinstance(node.op, ast.UAdd):
            return _convert(node.operand, where, text, count)
        raise _refuse(where, text, f"the operator {type(node.op).__name__}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise _refuse(where, text, "calling anything but a function name")
        name = node.func.id
        if name not in FUNCTIONS:
            raise _refuse(where, text, f"calling {name!r}")
        if node.keywords:
            raise _refuse(where, text, f"keyword arguments (in {name}(...))")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise _refuse(where, text, f"*arguments (in {name}(...))")
        fn = FUNCTIONS[name]
        lo, hi = fn.arity
        if not lo <= len(node.args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise SpecError(f"{where}: {name}() takes {want} argument(s), got {len(node.args)} ({text!r})")
        args = tuple(_convert(a, where, text, count) for a in node.args)
        for i in fn.numeric:
            if not isinstance(args[i], Num) and not (isinstance(args[i], Unary) and args[i].op == "neg"
                                                     and isinstance(args[i].operand, Num)):
                raise SpecError(f"{where}: argument {i + 1} of {name}() must be a number ({text!r})")
        return Call(name, args)
    raise _refuse(where, text, _describe(node))


def _describe(node: ast.AST) -> str:
    kinds = {
        ast.Lambda: "a lambda", ast.ListComp: "a comprehension", ast.GeneratorExp: "a generator",
        ast.SetComp: "a comprehension", ast.DictComp: "a comprehension", ast.Subscript: "indexing ([...])",
        ast.Compare: "a comparison", ast.BoolOp: "and/or", ast.IfExp: "if/else", ast.List: "a list",
        ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set", ast.JoinedStr: "an f-string",
        ast.NamedExpr: "an assignment (:=)", ast.Await: "await", ast.Yield: "yield", ast.Starred: "*",
    }
    for kind, text in kinds.items():
        if isinstance(node, kind):
            return text
    return type(node).__name__


def references(node: Node) -> list[Ref]:
    """Every name the expression uses, in order of appearance."""
    if isinstance(node, Ref):
        return [node]
    if isinstance(node, Unary):
        return references(node.operand)
    if isinstance(node, Binary):
        return references(node.left) + references(node.right)
    if isinstance(node, Call):
        return [r for a in node.args for r in references(a)]
    return []


def elementwise_path(node: Node, target: Ref) -> bool:
    """Whether ``target`` reaches the result only through elementwise operations, so that its shape is
    the shape of the result (used to infer a network head's shape from the parameter it feeds)."""
    if isinstance(node, Ref):
        return node == target
    if isinstance(node, Unary):
        return node.op != "T" and elementwise_path(node.operand, target)
    if isinstance(node, Binary):
        if node.op == "@":
            return False
        return elementwise_path(node.left, target) or elementwise_path(node.right, target)
    if isinstance(node, Call):
        if node.fn in ("sum", "mean", "onehot", "cat"):
            return False
        return any(elementwise_path(a, target) for a in node.args)
    return False


def to_text(node: Node) -> str:
    """The expression written back (for messages)."""
    if isinstance(node, Num):
        return repr(node.value)
    if isinstance(node, Ref):
        return node.name if node.head is None else f"{node.name}.{node.head}"
    if isinstance(node, Unary):
        return f"-{to_text(node.operand)}" if node.op == "neg" else f"{to_text(node.operand)}.T"
    if isinstance(node, Binary):
        return f"({to_text(node.left)} {node.op} {to_text(node.right)})"
    return f"{node.fn}({', '.join(to_text(a) for a in node.args)})"


# --------------------------------------------------------------------------- evaluation

Value = tuple[torch.Tensor | float, int]  # (tensor or number, event rank)


def _pad(v: Value, rank: int) -> torch.Tensor:
    """The tensor with singleton event dimensions inserted on the left of its event part, so that its
    event part has ``rank`` dimensions and its batch dimensions line up with another value's."""
    t, e = v
    if e == rank or not isinstance(t, torch.Tensor):
        return t
    batch = t.shape[: t.dim() - e]
    return t.reshape(*batch, *([1] * (rank - e)), *t.shape[t.dim() - e :])


def align(a: Value, b: Value) -> tuple[torch.Tensor, torch.Tensor, int]:
    rank = max(a[1], b[1])
    return _pad(a, rank), _pad(b, rank), rank


def _number(node: Node) -> float:
    if isinstance(node, Num):
        return node.value
    assert isinstance(node, Unary) and isinstance(node.operand, Num)
    return -node.operand.value


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exp": torch.exp, "log": torch.log, "log1p": torch.log1p, "expm1": torch.expm1, "sqrt": torch.sqrt,
    "abs": torch.abs, "square": torch.square, "softplus": F.softplus, "sigmoid": torch.sigmoid,
    "logsigmoid": F.logsigmoid, "tanh": torch.tanh, "relu": torch.relu,
}


class EvalError(ValueError):
    """An expression that cannot be evaluated on the values it was given (shapes that do not fit)."""


def evaluate(node: Node, lookup: Callable[[Ref], Value]) -> Value:
    """The value of ``node``; ``lookup`` gives the value of a name."""
    if isinstance(node, Num):
        return node.value, 0  # a Python number: torch broadcasts it without a tensor per use
    if isinstance(node, Ref):
        if node.head is None and node.name in CONSTANTS:
            return CONSTANTS[node.name], 0
        return lookup(node)
    if isinstance(node, Unary):
        t, e = evaluate(node.operand, lookup)
        if node.op == "neg":
            return -t, e
        if node.op == "pos":
            return t, e
        if e < 2:
            raise EvalError(f".T needs a matrix (two event dimensions), got a value with {e} in {to_text(node)}")
        return t.transpose(-1, -2), e
    if isinstance(node, Binary):
        a = evaluate(node.left, lookup)
        b = evaluate(node.right, lookup)
        if node.op == "@":
            return _matmul(a, b, node)
        x, y, rank = align(a, b)
        try:
            if node.op == "+":
                return x + y, rank
            if node.op == "-":
                return x - y, rank
            if node.op == "*":
                return x * y, rank
            if node.op == "/":
                return x / y, rank
            return x**y, rank
        except RuntimeError as exc:
            raise EvalError(f"{to_text(node)}: shapes {_shape(a)} and {_shape(b)} do not broadcast ({exc})") from None
    return _call(node, lookup)


def _shape(v: Value) -> str:
    t, e = v
    t = torch.as_tensor(t)
    return f"{list(t.shape[t.dim() - e:])} (event) x {list(t.shape[: t.dim() - e])} (batch)"


def _matmul(a: Value, b: Value, node: Node) -> Value:
    (x, ea), (y, eb) = a, b
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise EvalError(f"{to_text(node)}: @ multiplies vectors and matrices, not numbers")
    try:
        if ea == 1 and eb == 1:
            return (x * y).sum(-1), 0
        if ea == 1 and eb == 2:
            return (x.unsqueeze(-2) @ y).squeeze(-2), 1
        if ea == 2 and eb == 1:
            return (x @ y.unsqueeze(-1)).squeeze(-1), 1
        if ea == 2 and eb == 2:
            return x @ y, 2
    except RuntimeError as exc:
        raise EvalError(f"{to_text(node)}: cannot multiply {_shape(a)} by {_shape(b)} ({exc})") from None
    raise EvalError(f"{to_text(node)}: @ multiplies vectors and matrices (1 or 2 event dimensions), got "
                    f"{ea} and {eb}")


def _call(node: Call, lookup: Callable[[Ref], Value]) -> Value:
    fn = node.fn
    if fn in _UNARY:
        t, e = evaluate(node.args[0], lookup)
        return _UNARY[fn](torch.as_tensor(t)), e
    if fn in ("softmax", "log_softmax"):
        t, e = evaluate(node.args[0], lookup)
        if e < 1:
            raise EvalError(f"{to_text(node)}: {fn} needs a vector (an event dimension)")
        return (torch.softmax(t, -1) if fn == "softmax" else torch.log_softmax(t, -1)), e
    if fn in ("sum", "mean"):
        t, e = evaluate(node.args[0], lookup)
        t = torch.as_tensor(t)
        if e == 0:
            return t, 0
        dims = tuple(range(-e, 0))
        return (t.sum(dims) if fn == "sum" else t.mean(dims)), 0
    if fn == "clamp":
        t, e = evaluate(node.args[0], lookup)
        t = torch.as_tensor(t)
        return t.clamp(_number(node.args[1]), _number(node.args[2])), e
    if fn in ("maximum", "minimum"):
        x, y, rank = align(evaluate(node.args[0], lookup), evaluate(node.args[1], lookup))
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        try:
            return (torch.maximum(x, y) if fn == "maximum" else torch.minimum(x, y)), rank
        except RuntimeError as exc:
            raise EvalError(f"{to_text(node)}: shapes do not broadcast ({exc})") from None
    if fn == "onehot":
        t, e = evaluate(node.args[0], lookup)
        t = torch.as_tensor(t)
        k = int(_number(node.args[1]))
        if k < 1 or k != _number(node.args[1]):
            raise EvalError(f"{to_text(node)}: the number of classes must be a positive integer")
        return F.one_hot(t.long().clamp(0, k - 1), k).to(torch.get_default_dtype()), e + 1
    if fn == "cat":
        vals = [(torch.as_tensor(t), e) for t, e in (evaluate(a, lookup) for a in node.args)]
        rank = max(e for _, e in vals)
        if rank < 1:
            raise EvalError(f"{to_text(node)}: cat joins vectors; its arguments have no event dimension")
        ts = [_pad(v, rank) for v in vals]
        batch = torch.broadcast_shapes(*(t.shape[: t.dim() - rank] for t in ts))
        try:
            lead = torch.broadcast_shapes(*(t.shape[t.dim() - rank : -1] for t in ts)) if rank > 1 else ()
            ts = [t.expand(*batch, *lead, t.shape[-1]) for t in ts]
            return torch.cat(ts, -1), rank
        except RuntimeError as exc:
            raise EvalError(f"{to_text(node)}: the values do not line up ({exc})") from None
    raise EvalError(f"unknown function {fn!r}")  # unreachable: parse() refuses it
