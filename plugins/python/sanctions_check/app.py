"""The example sanctions rule, in Python: denies when the customer's or the beneficiary's
country is on a list read through a read-only directory grant.

Reads `customer.country` and `payment.beneficiary_country` (ISO codes). Settings: `list`
(path inside the sandbox, default `/data/sanctioned_countries.txt`: one code per line, `#`
comments). Decides as plugins/examples/sanctions_check (Rust) does; it reads the list on
every evaluation (the Rust one loads it once, in `init`).
"""

from rulebox_rule import Decision, Failed, InvalidInput, Request, export

PATHS = ("customer.country", "payment.beneficiary_country")


def parse_list(text: str) -> list[str]:
    codes = (line.split("#", 1)[0].strip().upper() for line in text.splitlines())
    return [c for c in codes if c]


def load_list(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_list(f.read())
    except OSError as e:
        raise Failed(f"cannot read sanctions list {path}: {e.strerror or e}") from None


def check(listed: list[str], req: Request) -> Decision:
    hits = []
    for path in PATHS:
        code = req.fact_opt(path, str)
        if code is not None and code.upper() in listed:
            hits.append(f"{path} {code.upper()} is sanctioned")
    if "customer.country" not in req.facts:
        raise InvalidInput("missing fact `customer.country`")
    if hits:
        return Decision.deny(*hits, output={"sanctioned": True})
    return Decision.allow(output={"sanctioned": False})


class SanctionsCheck:
    def evaluate(self, req: Request) -> Decision:
        return check(load_list(req.setting("list", "/data/sanctioned_countries.txt", str)), req)


WitWorld = export(SanctionsCheck)
