"""Natively, the hostile rule's cheap attacks behave as written (the host tests the rest)."""

import pytest

from app import Hostile
from rulebox_rule import Failed, Request


def test_raise_and_unknown():
    with pytest.raises(ValueError, match="told to raise"):
        Hostile().evaluate(Request(settings={"do": "raise"}))
    with pytest.raises(Failed, match="unknown `do`"):
        Hostile().evaluate(Request(settings={"do": "dance"}))
