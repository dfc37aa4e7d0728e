"""The example amount rule, in Python: deny orders over a limit, send large ones to review.

Reads `order.amount` (number) and optionally `order.currency`; settings: `max` (default
5000), `review_above` (optional), `currencies` (optional allow-list). Decides exactly as
plugins/examples/amount_limit (Rust) does: tests/all/languages.rs checks it.
"""

from rulebox_rule import Decision, Failed, InvalidInput, Request, export, num

SETTINGS = {"max", "review_above", "currencies"}


class AmountLimit:
    def evaluate(self, req: Request) -> Decision:
        unknown = sorted(set(req.settings) - SETTINGS)
        if unknown:
            raise Failed(f"setting `{unknown[0]}`: unknown field, expected one of `max`, `review_above`, `currencies`")
        limit = req.setting("max", 5000.0, float)
        review_above = req.setting("review_above", None, float)
        currencies = req.setting("currencies", None, list)
        amount = req.fact("order.amount", float)
        if amount < 0:
            raise InvalidInput(f"order.amount {num(amount)} is negative")
        currency = req.fact_opt("order.currency", str)
        if currencies is not None and currency is not None and currency not in currencies:
            return Decision.deny(f"currency {currency} is not accepted")
        if amount > limit:
            d = Decision.deny(f"amount {num(amount)} over limit {num(limit)}")
        elif review_above is not None and amount > review_above:
            d = Decision.review(f"amount {num(amount)} needs review")
        else:
            d = Decision.allow()
        d.score = amount / limit
        d.output = {"amount": amount, "max": limit}
        return d


WitWorld = export(AmountLimit)
