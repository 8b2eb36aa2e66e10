"""Validated definitions to columns and columns back to YAML, for what endpoints and consumers share."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from endpoints_app.models import Budgeted
from endpoints_app.validation import BudgetSpec, ParamsSpec


def budget_columns(budget: BudgetSpec | None) -> dict[str, Any]:
    """The columns of a validated `budget:` (endpoints and consumers)."""
    return {"budget_usd": budget.usd if budget else None, "budget_period": budget.period if budget else "",
            "budget_action": budget.action if budget else ""}


def budget_to_yaml(row: Budgeted) -> dict[str, Any] | None:
    if not row.has_budget:
        return None
    return {"usd": plain_number(row.budget_usd), "period": row.budget_period, "action": row.budget_action}


def plain_number(amount: Decimal | None) -> int | float:
    """A stored amount as YAML writes it: 50 rather than 50.000000, 0.15 rather than 0.150000."""
    value = (amount or Decimal(0)).normalize()
    return int(value) if value == value.to_integral_value() else float(value)


def params_to_yaml(params: ParamsSpec | None) -> dict[str, Any] | None:
    """A validated `params:` as stored (and exported): only what it sets."""
    if params is None:
        return None
    out: dict[str, Any] = {}
    if params.defaults:
        out["defaults"] = params.defaults
    if params.max:
        out["max"] = params.max
    if params.deny:
        out["deny"] = list(params.deny)
    if params.on_max != "clamp":
        out["on_max"] = params.on_max
    return out or None
