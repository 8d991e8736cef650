"""Small checks of raw text input shared by the parsers of query strings and paths."""

from __future__ import annotations


def is_digits(raw: str) -> bool:
    """True for a non-empty run of ASCII 0-9 only. ``str.isdigit`` alone also takes
    superscripts and other scripts' digits, which ``int()`` refuses (a 500, not a 4xx)."""
    return raw.isascii() and raw.isdigit()
