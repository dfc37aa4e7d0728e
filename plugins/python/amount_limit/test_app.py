"""Native unit tests of the Python amount rule: plain pytest, no Wasm."""

import pytest

from app import AmountLimit
from rulebox_rule import Failed, InvalidInput, Request


def evaluate(amount, settings=None, currency=None):
    facts = {"order.amount": amount}
    if currency is not None:
        facts["order.currency"] = currency
    return AmountLimit().evaluate(Request(facts=facts, settings=settings or {}))


def test_limits():
    assert evaluate(100).verdict == "allow"
    d = evaluate(6000)
    assert (d.verdict, d.reasons) == ("deny", ["amount 6000 over limit 5000"])
    assert evaluate(600, {"max": 1000, "review_above": 500}).verdict == "review"
    assert evaluate(10, {"currencies": ["EUR"]}, "JPY").reasons == ["currency JPY is not accepted"]
    assert evaluate(7250.5).output == {"amount": 7250.5, "max": 5000.0}


def test_bad_input_and_settings():
    with pytest.raises(InvalidInput, match="fact `order.amount`"):
        evaluate("lots")
    with pytest.raises(InvalidInput, match="negative"):
        evaluate(-1)
    with pytest.raises(Failed, match="`maxx`"):
        evaluate(1, {"maxx": 1})
    with pytest.raises(Failed, match="setting `max`"):
        evaluate(1, {"max": "high"})
