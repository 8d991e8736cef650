"""The unified social credit code (统一社会信用代码, GB 32100-2015) of enterprises."""

from __future__ import annotations

import re

# The code's alphabet leaves out I, O, Z, S and V; each character's value is its index here.
ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
USCC_RE = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$")


def check_character(first17: str) -> str:
    total = sum(ALPHABET.index(ch) * w for ch, w in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def uscc_error(code: str) -> str | None:
    """Why ``code`` is not a valid unified social credit code (None when it is)."""
    if not USCC_RE.fullmatch(code):
        return f"{code!r} is not 18 characters of the GB 32100 alphabet"
    expected = check_character(code[:17])
    if code[17] != expected:
        return f"{code!r} fails the GB 32100 check character (expected {expected})"
    return None
