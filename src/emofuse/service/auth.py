"""Optional API keys, kept only as SHA-256 hashes.

A key is any string a client sends as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. The
service stores and compares the hex SHA-256 digest of it (:func:`hash_key`), never the key, so a
leaked settings file or environment does not leak the keys. Digests are compared with
:func:`hmac.compare_digest` against every accepted hash, so the time taken says nothing about
how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping

KEY_HEADER = "x-api-key"


def hash_key(key: str) -> str:
    """The 64-hex-digit SHA-256 digest of ``key`` (UTF-8), as ``--api-key-hash`` takes it.

    Raises:
        ValueError: ``key`` is empty or only spaces.
    """
    if not key.strip():
        raise ValueError("an API key cannot be empty")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random key (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries (``Authorization: Bearer``, else ``X-API-Key``), if any."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get(KEY_HEADER)
    return key.strip() if key and key.strip() else None


def key_accepted(key: str, hashes: Iterable[str]) -> bool:
    """Whether ``key``'s digest is one of ``hashes`` (each compared in constant time)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    accepted = False
    for h in hashes:
        accepted |= hmac.compare_digest(digest, h)
    return accepted


__all__ = ["KEY_HEADER", "hash_key", "key_accepted", "new_key", "presented_key"]
