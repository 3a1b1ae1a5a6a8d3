"""Value rules for config checks: each knows what it allows and says so in the error.

A rule is ``Rule(test, allowed)``; ``rule.check(key, value)`` raises the standard one-line
:class:`bench.errors.ConfigError` (``key=value is not allowed: <allowed>``) when ``test(value)``
is false. Plug-ins (warm-ups, decays, probes) attach rules to their own parameters with
:func:`params`, so each plug-in's keys are validated next to its code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable

from bench.errors import bad


def is_number(v: Any) -> bool:
    """A finite real number (bools excluded: YAML's ``true`` is not 1.0)."""
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Rule:
    test: Callable[[Any], bool]
    allowed: str
    none_ok: bool = False

    def check(self, key: str, value: Any) -> None:
        if value is None and self.none_ok:
            return
        try:
            ok = bool(self.test(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise bad(key, value, self.allowed + (", or null" if self.none_ok else ""))

    def or_none(self) -> "Rule":
        return Rule(self.test, self.allowed, none_ok=True)


def int_at_least(low: int) -> Rule:
    return Rule(lambda v: is_int(v) and v >= low, f"an integer >= {low}")


def number_above(low: float) -> Rule:
    return Rule(lambda v: is_number(v) and v > low, f"a number > {low:g}")


def fraction(low_open: bool = True, high_open: bool = False) -> Rule:
    """A number in the unit interval; ``low_open``/``high_open`` exclude 0 / 1."""
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")

    def test(v):
        return is_number(v) and (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)

    return Rule(test, f"a number in {lo}0, 1{hi}")


def boolean() -> Rule:
    return Rule(lambda v: isinstance(v, bool), "true or false")


def one_of(*allowed: Any) -> Rule:
    return Rule(lambda v: v in allowed, "one of " + ", ".join(map(str, allowed)))


def increasing_fractions() -> Rule:
    def test(v):
        ms = list(v)
        return all(is_number(m) and 0 < m < 1 for m in ms) and ms == sorted(ms)

    return Rule(test, "a list of increasing fractions of the budget in (0, 1)")


def params(**rules: Rule):
    """Decorator: attach value rules to a plug-in function's keyword parameters.

    The harness checks every configured keyword against these rules at start-up (and against
    the function's signature: an unknown or missing keyword is refused too).
    """

    def attach(fn):
        fn.param_rules = dict(rules)
        return fn

    return attach
