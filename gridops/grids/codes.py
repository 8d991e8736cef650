"""Administrative and unit-grid codes (GB/T 2260, statistical division codes, GB/T 30428)."""

from __future__ import annotations

import re

LEVELS = ("city", "district", "town", "community")
LEVEL_DEPTH = {level: depth for depth, level in enumerate(LEVELS)}
CODE_LENGTH = {"city": 6, "district": 6, "town": 9, "community": 12}

# Unit-grid code patterns by the standard edition they follow; a city on another edition adds
# its own entry. 2013: 12-digit community + 3-digit sequence; the older systems use 2 digits;
# the newer edition allows upper-case letters in the sequence.
GRID_CODE_PATTERNS: dict[str, re.Pattern[str]] = {
    "GB/T 30428.2-2013": re.compile(r"^[0-9]{12}[0-9]{3}$"),
    "GB/T 30428.2-2013/14": re.compile(r"^[0-9]{12}[0-9]{2}$"),
    "GB/T 30428.2-2023": re.compile(r"^[0-9]{12}[0-9A-Z]{3}$"),
}
DEFAULT_GRID_STANDARD = "GB/T 30428.2-2013"


def level_of(code: str) -> str | None:
    """The level a code's form implies: 6 digits ending 00 is a prefecture city, else district."""
    if not code.isdigit():
        return None
    if len(code) == 6:
        return "city" if code.endswith("00") else "district"
    return {9: "town", 12: "community"}.get(len(code))


def parent_of(code: str) -> str | None:
    """The parent code a code's form implies (``None`` for a city)."""
    level = level_of(code)
    if level == "district":
        return code[:4] + "00"
    if level == "town":
        return code[:6]
    if level == "community":
        return code[:9]
    return None


def code_matches_parent(code: str, parent: str) -> bool:
    """A district shares its city's first 4 digits; below that a code begins with its parent's."""
    if level_of(code) == "district":
        return code[:4] == parent[:4] and level_of(parent) == "city"
    return code.startswith(parent) and len(code) > len(parent)


def grid_code_error(code: str, standard_ref: str) -> str | None:
    """Why ``code`` is not a unit-grid code under ``standard_ref`` (None when it is)."""
    pattern = GRID_CODE_PATTERNS.get(standard_ref)
    if pattern is None:
        return f"unknown standard_ref {standard_ref!r} (known: {', '.join(GRID_CODE_PATTERNS)})"
    if not pattern.fullmatch(code):
        return f"{code!r} is not a unit-grid code under {standard_ref} ({pattern.pattern})"
    return None
