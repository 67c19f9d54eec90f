"""Class lists (label i is ``classes[i]``) and how two of them differ, in words an error can carry."""
from __future__ import annotations

from typing import Sequence

_SHOWN = 5  # class names quoted in a message before "and N more"


def label_names(count: int) -> list[str]:
    """``["0", ..., str(count - 1)]``: the classes of data labelled by number (file lists, MNIST)."""
    return [str(i) for i in range(count)]


def _numbered(classes: Sequence[str]) -> bool:
    return list(classes) == label_names(len(classes))


def _quote(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"class{'es' if len(names) > 1 else ''} {shown}{more}"


def class_difference(expected: Sequence[str], actual: Sequence[str], names: tuple[str, str]) -> str | None:
    """Why labels of ``actual`` would not mean the classes of ``expected`` (None when they do);
    ``names`` name the two lists in the message.

    Named classes must match in names and order: a class missing from one folder shifts
    every label after it. When either list is numbered (``label_names``: no names to compare),
    ``actual`` only must not have more classes than ``expected``.
    """
    a, b = names
    if _numbered(actual) or _numbered(expected):
        return None if len(actual) <= len(expected) else \
            f"{b} has {len(actual)} classes, more than the {len(expected)} of {a}"
    if list(actual) == list(expected):
        return None
    have, want = set(actual), set(expected)
    missing = [c for c in expected if c not in have]
    extra = [c for c in actual if c not in want]
    parts = ([f"{b} lacks {_quote(missing)}"] if missing else []) + \
            ([f"{a} lacks {_quote(extra)}"] if extra else [])
    if not parts:
        i = next(i for i, (x, y) in enumerate(zip(expected, actual)) if x != y)
        parts = [f"the same classes in another order: label {i} is {expected[i]!r} in {a} "
                 f"but {actual[i]!r} in {b}"]
    return "; ".join(parts)
