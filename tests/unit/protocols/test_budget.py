from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafed.protocols import BudgetExceeded, PrivacyAccountant


def test_basic_composition_is_exact() -> None:
    acc = PrivacyAccountant(1.0, composition="basic")
    for _ in range(10):
        acc.charge(0.1, label="query")
    assert acc.remaining() == (0, 0)
    with pytest.raises(BudgetExceeded) as info:
        acc.charge(0.01)
    assert "remaining epsilon=0" in str(info.value)
    assert len(acc.charges) == 10


def test_refusal_reports_what_is_left_and_spends_nothing() -> None:
    acc = PrivacyAccountant(Fraction(1), Fraction(1, 10**5), composition="basic")
    acc.charge(0.7, 1e-6)
    with pytest.raises(BudgetExceeded) as info:
        acc.charge(0.5)
    err = info.value
    assert err.remaining_epsilon == Fraction(3, 10)
    assert err.requested_epsilon == Fraction(1, 2)
    assert acc.spent() == (Fraction(7, 10), Fraction(1, 10**6))
    acc.charge(0.3)


def test_advanced_composition_allows_more_small_charges() -> None:
    eps_each, k = 0.002, 1000  # basic: 2 > 1; advanced: about 0.35
    adv = PrivacyAccountant(1.0, 1e-6, composition="best")
    basic = PrivacyAccountant(1.0, 1e-6, composition="basic")
    for _ in range(k):
        adv.charge(eps_each)
    with pytest.raises(BudgetExceeded):
        for _ in range(k):
            basic.charge(eps_each)
    slack = 5e-7
    expected = math.sqrt(2 * math.log(1 / slack) * k * eps_each**2) + k * eps_each * math.expm1(
        eps_each
    )
    assert adv.advanced_epsilon() == pytest.approx(expected)
    assert adv.advanced_epsilon() <= 1.0
    eps_left, delta_left = adv.remaining()
    assert float(eps_left) == pytest.approx(1.0 - expected)
    assert delta_left == Fraction(1, 10**6) - Fraction(5, 10**7)


def test_advanced_needs_delta() -> None:
    with pytest.raises(ValueError, match="slack"):
        PrivacyAccountant(1.0, 0, composition="advanced")
    acc = PrivacyAccountant(1.0)  # delta 0: only basic composition can apply
    assert acc.advanced_epsilon() == math.inf


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="epsilon budget must be positive"):
        PrivacyAccountant(0)
    with pytest.raises(ValueError, match="delta budget must be in"):
        PrivacyAccountant(1, 1)
    acc = PrivacyAccountant(1)
    with pytest.raises(ValueError, match="charged epsilon must be positive"):
        acc.charge(0)
    with pytest.raises(TypeError):
        acc.charge("0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        acc.charge(float("nan"))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.fractions(min_value=Fraction(1, 1000), max_value=1), max_size=30))
def test_never_overspends_under_basic(charges: list[Fraction]) -> None:
    acc = PrivacyAccountant(Fraction(2), composition="basic")
    for c in charges:
        try:
            acc.charge(c)
        except BudgetExceeded:
            pass
    assert acc.spent()[0] <= 2
