"""The example risk rule, in Python: combines facts and, when it has them, upstream
decisions into a 0-100 risk score. Settings: `review_at` (default 50), `deny_at` (80).

Reads `order.amount`, `customer.age_days`, `customer.verified`, `order.items` (array);
upstream (optional): `amount-limit` and `sanctions`. Decides as plugins/examples/risk_score
(Rust) does.
"""

import math

from rulebox_rule import Decision, InvalidInput, Request, export, log, num


class RiskScore:
    def evaluate(self, req: Request) -> Decision:
        review_at = req.setting("review_at", 50.0, float)
        deny_at = req.setting("deny_at", 80.0, float)
        amount = req.fact("order.amount", float)
        age_days = req.fact_opt("customer.age_days", int)
        if age_days is not None and not 0 <= age_days < 2**32:
            raise InvalidInput(f"fact `customer.age_days`: {age_days} is out of range")
        age_days = age_days or 0
        verified = req.fact_opt("customer.verified", bool) or False
        items = req.fact_opt("order.items", list) or []

        score = 0.0
        factors = []

        def add(points: float, why: str) -> None:
            nonlocal score
            score += points
            factors.append(f"+{num(points)} {why}")

        if amount > 1000.0:
            # Rust's f64::round: halves away from zero (Python's round() goes to even).
            add(float(math.floor(min(amount / 1000.0, 30.0) + 0.5)), "large amount")
        if age_days < 30:
            add(20.0, "new customer")
        if not verified:
            add(15.0, "unverified customer")
        if len(items) > 20:
            add(10.0, "many items")
        limit = req.upstream("amount-limit")
        if limit is not None and limit.verdict != "allow":
            add(25.0, "amount-limit did not allow")
        sanctions = req.upstream("sanctions")
        if sanctions is not None and sanctions.verdict == "deny":
            add(100.0, "sanctions hit")
        score = min(score, 100.0)
        log.debug(f"risk score {num(score)} from {len(factors)} factors")
        if score >= deny_at:
            d = Decision.deny(f"risk score {num(score)} at or above {num(deny_at)}")
        elif score >= review_at:
            d = Decision.review(f"risk score {num(score)} at or above {num(review_at)}")
        else:
            d = Decision.allow()
        d.score = score
        d.output = {"score": score, "factors": factors}
        return d


WitWorld = export(RiskScore)
