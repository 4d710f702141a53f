"""Typed readers over untrusted YAML data that collect problems instead of raising.

Why not raise on the first bad value: an operator fixing a config file wants every mistake in one
run, each on its own line with the key path and the fix. So every reader here records a problem in
a shared ``Problems`` list and returns None (or the default) so validation can go on.

Pure: works on the Python objects ``yaml.safe_load`` produced; does no I/O.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

_MAX_SHOWN = 40


@dataclass
class Problems:
    """One line per mistake, formatted ``path: problem; fix``."""

    items: list[str] = field(default_factory=list)

    def add(self, path: str, problem: str, fix: str) -> None:
        self.items.append(f"{path or '<top level>'}: {problem}; {fix}")

    def __len__(self) -> int:
        return len(self.items)


def child(path: str, key: object) -> str:
    """Key path of a mapping entry, e.g. ``clusters[0]`` + ``hosts`` -> ``clusters[0].hosts``.

    A key that is not a plain printable word of sane length (a newline, a 10 kB string, a number)
    is quoted and cut, so a hostile key cannot break the one-line-per-problem output.
    """
    text = str(key)
    if not (isinstance(key, str) and text.isprintable() and len(text) <= 64):
        text = repr(text[:40])
    return f"{path}.{text}" if path else text


def item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def show(value: object) -> str:
    """A short, single-line rendering of a user's value for messages."""
    if value is None:
        return "nothing (null)"
    text = repr(value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return text.replace("\n", "\\n")


def _quote_hint(value: object) -> str:
    if isinstance(value, bool | int | float) or value is None:
        return " (YAML read it as a number, boolean or null: put it in quotes)"
    return ""


def closest(word: str, choices: Sequence[str]) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def mapping(value: object, path: str, probs: Problems, hint: str = "") -> dict[str, Any] | None:
    """The value as a dict with string keys, or None after recording why it is not one."""
    if not isinstance(value, dict):
        probs.add(path, f"expected a mapping (key: value), got {show(value)}", hint or "write it as key: value lines")
        return None
    result: dict[str, Any] = {}
    for key, sub in value.items():
        if not isinstance(key, str):
            probs.add(child(path, key), f"key {show(key)} is not a name", "use a plain word as the key")
            continue
        result[key] = sub
    return result


def check_keys(
    data: dict[str, Any], path: str, allowed: Sequence[str], required: Sequence[str], probs: Problems
) -> None:
    """Report unknown keys (with the closest valid one) and missing required ones."""
    for key in data:
        if key in allowed:
            continue
        guess = closest(key, allowed)
        fix = f"did you mean '{guess}'?" if guess else f"valid keys here: {', '.join(allowed)}"
        probs.add(child(path, key), "unknown key", fix)
    for key in required:
        if key not in data:
            probs.add(child(path, key), "missing required key", f"add '{key}:' here")


def sequence(value: object, path: str, probs: Problems, example: str) -> list[Any] | None:
    if not isinstance(value, list):
        probs.add(path, f"expected a list, got {show(value)}", f"write it as a list, e.g. {example}")
        return None
    return value


def integer(value: object, path: str, probs: Problems, lo: int | None = None, hi: int | None = None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        probs.add(path, f"expected an integer, got {show(value)}", "write a whole number without quotes")
        return None
    if lo is not None and value < lo:
        probs.add(path, f"{value} is below the minimum {lo}", f"use a value of at least {lo}")
        return None
    if hi is not None and value > hi:
        probs.add(path, f"{value} is above the maximum {hi}", f"use a value of at most {hi}")
        return None
    return value


def number(value: object, path: str, probs: Problems) -> float | None:
    """A finite int or float (durations are plain seconds: ``4``, ``0.25``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        probs.add(path, f"expected a number, got {show(value)}", "write a plain number such as 0.5")
        return None
    if not math.isfinite(value):
        probs.add(path, f"expected a finite number, got {show(value)}", "write a plain number such as 0.5")
        return None
    return float(value)


def string(value: object, path: str, probs: Problems) -> str | None:
    if not isinstance(value, str):
        probs.add(path, f"expected a string, got {show(value)}{_quote_hint(value)}", "write it as text")
        return None
    if not value.strip():
        probs.add(path, "is empty", "write a non-empty value or remove the key to use the default")
        return None
    return value


def boolean(value: object, path: str, probs: Problems) -> bool | None:
    if not isinstance(value, bool):
        probs.add(path, f"expected true or false, got {show(value)}", "write true or false")
        return None
    return value


def choice(value: object, path: str, probs: Problems, choices: Sequence[str]) -> str | None:
    if not isinstance(value, str) or value not in choices:
        guess = closest(value, choices) if isinstance(value, str) else None
        fix = f"did you mean '{guess}'?" if guess else f"use one of: {', '.join(choices)}"
        probs.add(path, f"expected one of {', '.join(choices)}, got {show(value)}", fix)
        return None
    return value


def u32(value: object, path: str, probs: Problems) -> int | None:
    """A 32-bit unsigned integer given as a number or a string such as ``"0xdeadbeef"``."""
    parsed: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = int(value.strip(), 0)
        except ValueError:
            parsed = None
    if parsed is None:
        probs.add(path, f"expected a 32-bit integer, got {show(value)}",
                  'write a number or a hex string like "0xdeadbeef"')
        return None
    if not 0 <= parsed <= 0xFFFFFFFF:
        probs.add(path, f"{parsed} does not fit in 32 bits", "use a value from 0 to 0xffffffff")
        return None
    return parsed


def _read_typed(value: object, hint: Any, path: str, probs: Problems) -> tuple[bool, Any]:
    """Check ``value`` against a dataclass field's type hint; (ok, converted value)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is bool:
        got: Any = boolean(value, path, probs)
    elif hint is int:
        got = integer(value, path, probs, lo=0)
    elif hint is float:
        got = number(value, path, probs)
        if got is not None and got < 0:
            probs.add(path, f"{value} is negative", "use 0 or more")
            got = None
    elif hint is str:
        got = string(value, path, probs)
    elif origin is Literal:
        if all(isinstance(a, str) for a in args):
            got = choice(value, path, probs, [str(a) for a in args])
        elif value in args and not isinstance(value, bool):
            got = value
        else:
            probs.add(path, f"expected one of {', '.join(map(str, args))}, got {show(value)}", "use one of those")
            got = None
    elif origin in (types.UnionType, typing.Union) and type(None) in args:
        if value is None:
            return True, None
        inner = [a for a in args if a is not type(None)]
        return _read_typed(value, inner[0], path, probs)
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        values = sequence(value, path, probs, "[a, b]")
        if values is None:
            return False, None
        out = []
        for i, sub in enumerate(values):
            ok, conv = _read_typed(sub, args[0], item(path, i), probs)
            if not ok:
                return False, None
            out.append(conv)
        return True, tuple(out)
    else:
        probs.add(path, "this setting cannot be set from a config file", "remove it")
        return False, None
    return got is not None, got


def section(default: T, value: object, path: str, probs: Problems) -> T:
    """Read a mapping whose keys are the fields of the dataclass ``default``; unset keys keep defaults.

    Generic on purpose: when a settings dataclass gains a field, the config file can set it
    without touching this module. Invalid values are reported and left at their defaults (the
    caller raises because ``probs`` is not empty).
    """
    if value is None:
        return default
    data = mapping(value, path, probs)
    if data is None:
        return default
    cls = type(default)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    check_keys(data, path, names, (), probs)
    changes: dict[str, Any] = {}
    for name in names:
        if name in data:
            ok, conv = _read_typed(data[name], hints[name], child(path, name), probs)
            if ok:
                changes[name] = conv
    return dataclasses.replace(default, **changes)  # type: ignore[type-var]
