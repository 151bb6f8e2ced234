"""Field rules that need nothing but the value: each argument dataclass checks its own fields in ``__post_init__``
with :func:`check_fields`, so the Python API (``MIPICTrainingArguments(...)``) and a recipe refuse a bad value with
the same one line, ``<field> must be <allowed>, got <value>`` (a recipe prefixes the field's section, e.g.
``loss.``). Rules that need the model, the data, the folders or the Hub stay where those are known.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

Rule = tuple[str, Callable[[Any], bool], str]  # (field, accepts(value), what is allowed)


def at_least(name: str, low: float, optional: bool = False) -> Rule:
    return name, lambda v: (optional and v is None) or (v is not None and v >= low), f">= {low:g}"


def above(name: str, low: float, optional: bool = False) -> Rule:
    return name, lambda v: (optional and v is None) or (v is not None and v > low), f"> {low:g}"


def within(name: str, low: float, high: float, optional: bool = False, closed: bool = True) -> Rule:
    """``low <= value <= high`` (``closed``) or ``low <= value < high``."""
    upper = "]" if closed else ")"

    def accepts(v: Any) -> bool:
        if v is None:
            return optional
        return low <= v <= high if closed else low <= v < high

    return name, accepts, f"in [{low:g}, {high:g}{upper}"


def one_of(name: str, choices: Iterable[str]) -> Rule:
    choices = tuple(choices)
    return name, lambda v: v in choices, f"one of {', '.join(choices)}"


def nonfinite(name: str, value: Any) -> str:
    return f"{name} must be a finite number, got {value}"


def check_finite(obj: Any) -> None:
    """Every float field (or list of floats) of a dataclass is finite: a NaN or inf weight, temperature or step
    count would only show as a NaN loss or an overflow once training runs."""
    for item in dataclasses.fields(obj):
        value = getattr(obj, item.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError(nonfinite(item.name, value))


def check_fields(obj: Any, rules: Iterable[Rule]) -> None:
    """Finite numbers first, then each rule in order; the first broken one raises ValueError naming the field."""
    check_finite(obj)
    for name, accepts, allowed in rules:
        value = getattr(obj, name)
        if not accepts(value):
            shown = repr(value) if isinstance(value, str) else value
            raise ValueError(f"{name} must be {allowed}, got {shown}")
