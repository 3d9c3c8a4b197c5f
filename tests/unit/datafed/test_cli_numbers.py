"""One number format for the analyst's tables (datafed.cli.numbers)."""

from __future__ import annotations

from decimal import Decimal

from datafed.cli.numbers import cell, precision_step


def test_every_number_has_thousands_separators() -> None:
    assert [cell(109759), cell(Decimal("184642")), cell(1234.5), cell(-1234567)] == [
        "109,759", "184,642", "1,234.5", "-1,234,567"
    ]  # fmt: skip
    assert [cell(None), cell(True), cell("n"), cell(2.0), cell(0.1 + 0.2)] == [
        "NULL", "True", "n", "2", "0.3"
    ]  # fmt: skip


def test_noisy_values_are_rounded_to_the_noise() -> None:
    assert precision_step(14.7) == Decimal(10) and precision_step(0.00587) == Decimal("0.001")
    assert precision_step(None) is None and precision_step(0.0) is None
    assert cell(1797.3125, precision_step(14.7)) == "1,800"
    assert cell(1797.3125, precision_step(2.8)) == "1,797"
    assert cell(301.2549, precision_step(0.00587)) == "301.255"
    assert cell(Decimal("123456.7"), precision_step(140)) == "123,500"
