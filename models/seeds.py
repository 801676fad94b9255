"""Seeds derived from text, the same on every host, version and Python run (unlike hash())."""

from __future__ import annotations

import hashlib


def stable_seed(key: str) -> int:
    """A 63-bit seed for ``key``; distinct keys give unrelated streams."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
