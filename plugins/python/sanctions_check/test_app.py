"""Native unit tests of the Python sanctions rule (the list is parsed, not read)."""

import pytest

from app import check, parse_list
from rulebox_rule import InvalidInput, Request


def test_listed_countries_are_denied():
    listed = parse_list("# comment\nir\nKP  # North Korea\n\n")
    assert listed == ["IR", "KP"]
    d = check(listed, Request(facts={"customer.country": "de", "payment.beneficiary_country": "kp"}))
    assert (d.verdict, d.reasons) == ("deny", ["payment.beneficiary_country KP is sanctioned"])
    assert check(listed, Request(facts={"customer.country": "DE"})).output == {"sanctioned": False}
    with pytest.raises(InvalidInput, match="customer.country"):
        check(listed, Request(facts={}))
