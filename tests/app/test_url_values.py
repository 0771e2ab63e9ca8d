"""URL text -> widget value: every hostile string gives a usable value and, when changed, a reason."""

from __future__ import annotations

import math

import pytest

from ui.url_values import (
    NONE_SELECTED,
    format_value,
    parse_bool,
    parse_choice,
    parse_multi,
    parse_number,
    shown,
)

HOSTILE = ["nan", "NaN", "inf", "-inf", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 400, "-5", "",
           " ", "abc", "0x10", "1,2", "None", "[]", "\x00", "١٢", "9" * 5000, "1e-400", "True"]


@pytest.mark.parametrize("raw", HOSTILE)
def test_numbers_never_raise_and_stay_in_range(raw: str) -> None:
    for low, high, default, integer, step in ((0, 2**31 - 1, 0, True, None), (1, 200, 40, True, None),
                                              (-3.0, 3.0, -2.5, False, 0.1), (-5.0, 5.0, 0.1, False, None)):
        parsed = parse_number(raw, low, high, default, integer=integer, step=step)
        assert low <= parsed.value <= high
        assert isinstance(parsed.value, int) if integer else isinstance(parsed.value, float | int)
        assert math.isfinite(parsed.value)


def test_number_rules() -> None:
    assert parse_number("500", 1, 200, 40, integer=True).value == 200
    assert parse_number("500", 1, 200, 40, integer=True).note.startswith("is above")
    assert parse_number("Infinity", 1, 200, 40, integer=True).value == 200
    assert parse_number("-inf", 1, 200, 40, integer=True).value == 1
    assert parse_number("nan", 1, 200, 40, integer=True).value == 40
    assert parse_number("text", 1, 200, 40, integer=True).value == 40
    assert parse_number("", 1, 200, 40, integer=True).value == 40
    assert parse_number("7.6", 1, 200, 40, integer=True).value == 8
    exact = parse_number("17", 1, 200, 40, integer=True)
    assert exact.value == 17 and exact.note is None
    snapped = parse_number("0.123", -3.0, 3.0, 0.0, integer=False, step=0.1)
    assert snapped.value == pytest.approx(0.1) and snapped.note
    assert parse_number("-2.5", -3.0, 3.0, 0.0, integer=False, step=0.1) == parse_number(
        "-2.5", -3.0, 3.0, 0.0, integer=False, step=0.1)
    assert parse_number("-2.5", -3.0, 3.0, 0.0, integer=False, step=0.1).note is None


@pytest.mark.parametrize("raw", HOSTILE)
def test_choices_never_raise(raw: str) -> None:
    for options, default in (([1, 1.5, 2, 20, 10000], 20), (["a", "b"], "a"), ([0.001, 1.0, 10.0], 1.0)):
        assert parse_choice(raw, options, default).value in options
    assert parse_bool(raw, True).value in (True, False)
    value = parse_multi([raw], ["gd", "adagrad"], ["gd"]).value
    assert isinstance(value, list) and set(value) <= {"gd", "adagrad"}


def test_choice_rules() -> None:
    kappas = [1, 1.5, 2, 20, 10000]
    assert parse_choice("Infinity", kappas, 20).value == 10000      # the largest, not the smallest
    assert parse_choice("-Infinity", kappas, 20).value == 1
    assert parse_choice("19", kappas, 20).value == 20
    assert parse_choice("19", kappas, 20).note
    assert parse_choice("1.5", kappas, 20) == parse_choice("1.50", kappas, 20)
    assert parse_choice("1.5", kappas, 20).note is None
    assert parse_choice("nan", kappas, 20).value == 20
    assert parse_choice("paper", ["paper", "rosenbrock"], "rosenbrock").value == "paper"
    assert parse_choice("nope", ["paper", "rosenbrock"], "rosenbrock").value == "rosenbrock"
    assert parse_bool("FALSE", True).value is False
    assert parse_bool("maybe", True).value is True and parse_bool("maybe", True).note


def test_multi_rules() -> None:
    options = ["newton", "tr_uniform", "gd"]
    assert parse_multi(["gd,newton"], options, ["gd"]).value == ["gd", "newton"]
    assert parse_multi(["gd", "newton", "gd"], options, ["gd"]).value == ["gd", "newton"]  # repeated keys
    assert parse_multi([NONE_SELECTED], options, ["gd"]).value == []
    assert parse_multi([""], options, ["gd"]).value == ["gd"]
    dropped = parse_multi(["gd,bogus"], options, ["newton"])
    assert dropped.value == ["gd"] and "bogus" in dropped.note


def test_format_round_trips_through_the_parsers() -> None:
    assert format_value(True) == "true" and format_value(False) == "false"
    assert format_value(0.1 + 0.2) == "0.3"
    assert format_value([]) == NONE_SELECTED
    assert format_value(["gd", "newton"]) == "gd,newton"
    for value in (0.001, 1e-5, 1.5, 20, 10000):
        assert parse_choice(format_value(value), [0.001, 1e-5, 1.5, 20, 10000], 20).value == value
    assert len(shown("x" * 1000)) <= 24 and "\x00" not in shown("a\x00b")
