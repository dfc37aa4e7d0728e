"""Native unit tests of the Python risk rule."""

from app import RiskScore
from rulebox_rule import Decision, Request


def test_factors_add_up_and_upstream_counts():
    d = RiskScore().evaluate(Request(facts={"order.amount": 7250, "customer.age_days": 12}))
    assert d.output["factors"] == ["+7 large amount", "+20 new customer", "+15 unverified customer"]
    assert (d.verdict, d.score) == ("allow", 42.0)
    d = RiskScore().evaluate(Request(
        facts={"order.amount": 7250, "customer.age_days": 12},
        upstream={"amount-limit": Decision.review()},
    ))
    assert (d.verdict, d.reasons) == ("review", ["risk score 67 at or above 50"])
    # Rust rounds halves away from zero: 2.5 -> 3.
    d = RiskScore().evaluate(Request(facts={"order.amount": 2500, "customer.verified": True, "customer.age_days": 99}))
    assert d.output["factors"] == ["+3 large amount"]
