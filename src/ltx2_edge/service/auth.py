"""Who may call the API: a Bearer token, required whenever the server listens beyond loopback.

``resolve_token`` decides once, at startup: a ``--token`` given is used; on a loopback address none is needed;
on any other address one is generated (the server prints it once). ``BearerAuth.allows`` compares in constant
time (``hmac.compare_digest``), so the time an answer takes says nothing about how much of a guess was right.

This module must never log or return the token, and never accept a token from a URL.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets

LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None) -> tuple[str | None, bool]:
    """(the token to require or None, whether it was generated here and must be shown to the user once)."""
    if token:
        return token, False
    if is_loopback(host):
        return None, False
    return generate_token(), True


def generate_token() -> str:
    """32 random bytes, URL-safe; never starting with ``-``, which ``--token TOKEN`` would read as an option (about 1
    in 64 of ``token_urlsafe``'s tokens did: a restart with the printed token then failed to parse)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


class BearerAuth:
    """Checks ``Authorization: Bearer <token>`` headers against one token."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an empty token would let anyone in")
        self._token = token.encode()

    def allows(self, authorization: str | None) -> bool:
        """True when the header carries the token."""
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        # compare_digest runs in time independent of where the first differing byte is.
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token)
