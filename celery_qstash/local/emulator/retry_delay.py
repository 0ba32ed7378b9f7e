"""When to retry a failed delivery: QStash's ``Upstash-Retry-Delay`` expressions,
the default exponential backoff, and ``Retry-After``-style response headers.

Expressions are user input arriving over HTTP, so they are parsed with
``ast.parse(mode="eval")`` and walked against a whitelist of node types; nothing
is ever handed to ``eval``. All arithmetic is done in floats so ``pow(10, 1e9)``
overflows quickly instead of building a giant integer.
"""

from __future__ import annotations

import ast
import email.utils
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_BACKOFF_SECONDS",
    "RetryDelay",
    "RetryDelayError",
    "compile_retry_delay",
    "default_backoff_ms",
    "parse_retry_after",
    "retry_after_from_headers",
]

MAX_BACKOFF_SECONDS = 86_400.0
MAX_EXPRESSION_LENGTH = 512

#: Response headers that can tell QStash when to come back, in priority order.
RETRY_AFTER_HEADERS = (
    "retry-after",
    "x-ratelimit-reset",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


class RetryDelayError(ValueError):
    """The expression is not a valid retry-delay expression (reported as 400)."""


def _round(x: float) -> float:
    # QStash documents round(); half away from zero is what people expect from it.
    return float(math.floor(x + 0.5)) if x >= 0 else -float(math.floor(-x + 0.5))


_FUNCTIONS: dict[str, tuple[int, Callable[..., float]]] = {
    "pow": (2, lambda x, y: math.pow(x, y)),
    "exp": (1, lambda x: math.exp(x)),
    "sqrt": (1, lambda x: math.sqrt(x)),
    "abs": (1, lambda x: abs(x)),
    "floor": (1, lambda x: float(math.floor(x))),
    "ceil": (1, lambda x: float(math.ceil(x))),
    "round": (1, _round),
    "min": (2, lambda x, y: min(x, y)),
    "max": (2, lambda x, y: max(x, y)),
}

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Mod: lambda a, b: math.fmod(a, b),
}


def _check(node: ast.AST) -> None:
    """Reject anything outside the grammar: numbers, ``retried``, + - * / %, unary -/+, calls."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise RetryDelayError("only numbers are allowed as literals")
    elif isinstance(node, ast.Name):
        if node.id != "retried":
            raise RetryDelayError(f"unknown variable {node.id!r}; only 'retried' is allowed")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise RetryDelayError("only + - * / % operators are allowed")
        _check(node.left)
        _check(node.right)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise RetryDelayError("only unary minus is allowed")
        _check(node.operand)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise RetryDelayError(
                "unknown function; allowed: " + ", ".join(sorted(_FUNCTIONS))
            )
        arity = _FUNCTIONS[node.func.id][0]
        if node.keywords or len(node.args) != arity:
            raise RetryDelayError(f"{node.func.id}() takes {arity} argument(s)")
        for arg in node.args:
            _check(arg)
    else:
        raise RetryDelayError(f"unsupported syntax: {type(node).__name__}")


def _evaluate(node: ast.AST, retried: float) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, (int, float))
        return float(node.value)
    if isinstance(node, ast.Name):
        return retried
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, retried), _evaluate(node.right, retried))
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, retried)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        func = _FUNCTIONS[node.func.id][1]
        return float(func(*(_evaluate(arg, retried) for arg in node.args)))
    raise RetryDelayError(f"unsupported syntax: {type(node).__name__}")  # pragma: no cover


@dataclass(frozen=True)
class RetryDelay:
    """A validated expression; calling it gives the delay in milliseconds."""

    source: str
    tree: ast.Expression

    def __call__(self, retried: int) -> float:
        """Delay in ms before the next attempt; ``retried`` is 0 before the first retry.

        Raises :class:`RetryDelayError` when the value is not a finite number
        (e.g. division by zero); callers fall back to the default backoff.
        """
        try:
            value = _evaluate(self.tree.body, float(retried))
        except OverflowError:
            value = math.inf  # "very long": capped below like any other huge delay
        except (ArithmeticError, ValueError) as exc:
            raise RetryDelayError(f"cannot evaluate retry delay: {exc}") from None
        if math.isnan(value):
            raise RetryDelayError("retry delay is not a number")
        return min(max(value, 0.0), MAX_BACKOFF_SECONDS * 1000)


def compile_retry_delay(source: str) -> RetryDelay:
    """Parse and validate ``source``; raises :class:`RetryDelayError`."""
    text = source.strip()
    if not text:
        raise RetryDelayError("empty retry delay expression")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise RetryDelayError("retry delay expression is too long")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise RetryDelayError("invalid retry delay expression") from None
    _check(tree.body)
    return RetryDelay(source=text, tree=tree)


def default_backoff_ms(n: int) -> float:
    """QStash's default: ``min(86400, e ** (2.5 * n))`` seconds, n = 1 before the first retry."""
    try:
        seconds = math.exp(2.5 * n)
    except OverflowError:
        seconds = MAX_BACKOFF_SECONDS
    return min(MAX_BACKOFF_SECONDS, seconds) * 1000


_GO_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait according to a ``Retry-After``-style value, or ``None`` to use the backoff.

    Accepts a number of seconds, an RFC 1123 date, or a Go duration (``6m5s``).
    Values over a day are ignored (QStash falls back to the backoff then).
    """
    text = value.strip()
    if not text:
        return None
    seconds: float | None = None
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        seconds = float(text)
    elif _GO_DURATION.fullmatch(text):
        seconds = sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_PART.findall(text))
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = max(0.0, when.timestamp() - now)
    if seconds > MAX_BACKOFF_SECONDS:
        return None
    return seconds


def retry_after_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """The first usable Retry-After-style header of a response, in seconds."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in RETRY_AFTER_HEADERS:
        if name in lowered:
            seconds = parse_retry_after(lowered[name], now)
            if seconds is not None:
                return seconds
    return None
