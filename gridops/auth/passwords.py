"""Passwords: argon2id hashes (rehashed when the parameters change) and a policy that refuses
short and common passwords. Nothing is truncated: argon2 takes the whole password."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

MIN_LENGTH = 10
MAX_LENGTH = 1024  # only against denial of service by huge inputs, never cut
MIN_STRENGTH = 3  # zxcvbn score 0..4
# zxcvbn refuses (ValueError) passwords longer than this; it rates their first characters.
ZXCVBN_MAX_LENGTH = 72

# Passwords at the top of Chinese leak lists, which zxcvbn's English lists miss.
COMMON_CHINESE = {
    "woaini1314", "woaini520", "5201314520", "1314520520", "aini1314", "woaini123",
    "qq123456789", "qwe123456", "abc123456", "a123456789", "zxcvbnm123", "1qaz2wsx3edc",
    "7758521521", "147258369", "123456789a", "aa123456789", "woshishui", "iloveyou1314",
}  # fmt: skip

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> tuple[bool, str | None]:
    """(matches, new hash to store if the parameters changed since it was made)."""
    try:
        _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    return True, (_hasher.hash(password) if _hasher.check_needs_rehash(stored_hash) else None)


def dummy_verify() -> None:
    """Spend the same time as a real check, so unknown usernames are not told apart."""
    verify_password(_DUMMY, "not the password")


_DUMMY = _hasher.hash("dummy password for timing")


def password_problems(password: str, *, username: str = "", display_name: str = "") -> list[str]:
    """Why a new password is refused (empty when it is acceptable)."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"must be at most {MAX_LENGTH} characters")
    if problems:
        return problems
    lowered = password.lower()
    if lowered in COMMON_CHINESE:
        return ["is one of the most common passwords"]
    if username and username.lower() in lowered:
        return ["must not contain the username"]
    hints = [username, display_name, "gridops", "foshan"]
    result = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=hints)
    if result["score"] < MIN_STRENGTH:
        hint = result["feedback"].get("warning") or "add more unusual words or characters"
        problems.append(f"is too easy to guess ({hint})")
    return problems
