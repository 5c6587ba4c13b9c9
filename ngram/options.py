"""Validated options of a table lookup (which estimate ``NGramTable.logprobs`` computes)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Mode = Literal["logsum", "mixture"]
Smoothing = Literal["add_alpha", "kneser_ney"]
MODES = ("logsum", "mixture")
SMOOTHINGS = ("add_alpha", "kneser_ney")


def _finite_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}")
    return value


@dataclass(frozen=True)
class LookupOptions:
    """One estimate: a single add-alpha order, a combination of orders, or Kneser-Ney.

    Attributes:
        kind: "order" (single order add-alpha), "combine" (weights over orders) or
            "kneser_ney".
        order: k for kind "order".
        weights: (b_1..b_N) for kind "combine".
        alpha: add-alpha pseudo-count (> 0).
        mode: "logsum" or "mixture" for kind "combine".
        discount: Kneser-Ney discount D in (0, 1).
    """

    kind: str
    order: int | None
    weights: tuple[float, ...] | None
    alpha: float
    mode: str
    discount: float


def resolve_options(
    max_order: int,
    *,
    order: int | None = None,
    weights=None,
    alpha: float = 0.01,
    mode: str = "mixture",
    smoothing: str = "add_alpha",
    discount: float = 0.75,
) -> LookupOptions:
    """Check lookup options against a table of order ``max_order`` and resolve defaults.

    Without ``order`` or ``weights`` the add-alpha form combines all orders with
    equal weights.
    """
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"`smoothing` must be one of {SMOOTHINGS}, got {smoothing!r}")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    alpha = _finite_number("alpha", alpha)
    if alpha <= 0:
        raise ValueError(f"`alpha` must be > 0, got {alpha}")
    discount = _finite_number("discount", discount)
    if not 0 < discount < 1:
        raise ValueError(f"`discount` must lie in (0, 1), got {discount}")
    if smoothing == "kneser_ney":
        if order is not None or weights is not None:
            raise ValueError(
                "`order` and `weights` do not apply with smoothing='kneser_ney' "
                "(it interpolates all orders); drop them"
            )
        return LookupOptions("kneser_ney", None, None, alpha, mode, discount)
    if order is not None:
        if weights is not None:
            raise ValueError("give either `order` (one order) or `weights` (a combination), not both")
        if isinstance(order, bool) or not isinstance(order, int):
            raise TypeError(f"`order` must be an int, got {order!r}")
        if not 1 <= order <= max_order:
            raise ValueError(f"`order` must lie in [1, {max_order}] for this table, got {order}")
        return LookupOptions("order", order, None, alpha, mode, discount)
    if weights is None:
        weights = (1.0,) * max_order
    if hasattr(weights, "tolist"):
        weights = weights.tolist()
    try:
        weights = tuple(weights)
    except TypeError:
        raise TypeError(f"`weights` must be a sequence of {max_order} numbers, got {weights!r}") from None
    if len(weights) != max_order:
        raise ValueError(
            f"`weights` must have one weight per order ({max_order}), got {len(weights)}: {weights}"
        )
    weights = tuple(_finite_number("weights", w) for w in weights)
    if any(w < 0 for w in weights):
        raise ValueError(f"`weights` must be >= 0, got {weights}")
    if not any(w > 0 for w in weights):
        raise ValueError(f"`weights` must not all be zero, got {weights}")
    return LookupOptions("combine", None, weights, alpha, mode, discount)
