"""The assistant's two tools, over deterministic local data (a real deployment would
call the billing system): ``lookup_account(email)`` and ``refund_status(order_id)``.

Both are ``@traced``: in an eval test each call is a ``tool`` step of the trajectory,
with its arguments and result; elsewhere they are plain functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_llmeval import traced

ACCOUNTS: dict[str, dict[str, Any]] = {
    "dana@northwind.example": {
        "name": "Dana Reyes",
        "company": "Northwind",
        "plan": "Business, billed annually",
        "role": "account owner",
        "orders": ["BD-1042", "BD-0977"],
    },
    "li.wei@harbor.example": {
        "name": "Li Wei",
        "company": "Harbor Labs",
        "plan": "Team, billed monthly",
        "role": "account owner",
        "orders": ["BD-2210"],
    },
    "sam@quill.example": {
        "name": "Sam Okafor",
        "company": "Quill",
        "plan": "Starter, billed monthly",
        "role": "account owner",
        "orders": ["BD-3318"],
    },
    "ana@ferro.example": {
        "name": "Ana Ferreira",
        "company": "Ferro",
        "plan": "Team, billed annually",
        "role": "account owner",
        "orders": ["BD-5127"],
    },
}

REFUNDS: dict[str, dict[str, Any]] = {
    "BD-1042": {"status": "refunded", "amount": "$566.40", "refunded_on": "2026-03-03"},
    "BD-0977": {"status": "no refund requested"},
    "BD-2210": {"status": "processing", "amount": "$348.00", "requested_on": "2026-04-10"},
    "BD-3318": {"status": "no refund requested"},
    "BD-5127": {"status": "refunded", "amount": "$1,113.60", "refunded_on": "2026-02-17"},
}

# The tools as the model sees them (OpenAI tool calling).
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup_account",
            "description": "The customer's Brightdesk account, by the email they gave: "
            "name, company, plan, role, and the order ids of the account.",
            "parameters": {
                "type": "object",
                "properties": {"email": {"type": "string"}},
                "required": ["email"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "refund_status",
            "description": "The refund status of one order: only for an order of the "
            "account looked up.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    },
]


@traced
def lookup_account(email: str) -> dict[str, Any]:
    account = ACCOUNTS.get(email.strip().lower())
    if account is None:
        return {"error": f"no account with the email {email}"}
    return {"email": email, **account}


@traced
def refund_status(order_id: str) -> dict[str, Any]:
    refund = REFUNDS.get(order_id.strip().upper())
    if refund is None:
        return {"error": f"no order {order_id}"}
    return {"order_id": order_id, **refund}


RUN: dict[str, Callable[..., dict[str, Any]]] = {
    "lookup_account": lookup_account,
    "refund_status": refund_status,
}
