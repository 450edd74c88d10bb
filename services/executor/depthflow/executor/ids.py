"""Deterministic client order ids derived from signal ids.

The same signal id always yields the same client order id (no clock, no randomness, no
process state), so a replayed signal or a restart maps to the order already stored, and the
venue can be asked for it by client id after a timeout or a 503 "unknown".

Format: ``<prefix>-<28 lowercase hex>[-<leg>]``, at most 36 characters, which is valid both as
a Binance ``newClientOrderId`` (``^[\\.A-Z\\:/a-z0-9_-]{1,36}$``) and as a Bybit
``orderLinkId`` (at most 36 characters; letters, digits, ``-`` and ``_``).
"""

from __future__ import annotations

import hashlib
import re

MAX_CLIENT_ORDER_ID_LEN = 36
BINANCE_CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
BYBIT_ORDER_LINK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
_PREFIX_RE = re.compile(r"^[a-z0-9]{1,4}$")
_DIGEST_HEX = 28  # 112 bits: collisions among signal ids are not a practical concern
DEFAULT_PREFIX = "df"


def client_order_id(signal_id: str, *, leg: int = 0, prefix: str = DEFAULT_PREFIX) -> str:
    """The client order id for order ``leg`` of signal ``signal_id``.

    ``leg`` distinguishes several orders deliberately derived from one signal (e.g. 1 = the
    exit of the position leg 0 opened); a retry of the same order must reuse the same leg.
    """
    if not signal_id:
        raise ValueError("signal_id must not be empty")
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"prefix must be 1-4 of [a-z0-9], got {prefix!r}")
    if not 0 <= leg <= 99:
        raise ValueError(f"leg must be 0..99, got {leg}")
    digest = hashlib.sha256(f"{signal_id}\x00{leg}".encode()).hexdigest()[:_DIGEST_HEX]
    coid = f"{prefix}-{digest}" if leg == 0 else f"{prefix}-{digest}-{leg}"
    assert len(coid) <= MAX_CLIENT_ORDER_ID_LEN  # 4 + 1 + 28 + 3 = 36
    return coid


def is_own_client_order_id(coid: str, *, prefix: str = DEFAULT_PREFIX) -> bool:
    """Whether ``coid`` has the shape :func:`client_order_id` produces with ``prefix``."""
    pattern = rf"{re.escape(prefix)}-[0-9a-f]{{{_DIGEST_HEX}}}(-[1-9][0-9]?)?"
    return re.fullmatch(pattern, coid) is not None


def is_valid_for_venues(coid: str) -> bool:
    """Whether ``coid`` is accepted by both Binance and Bybit."""
    return bool(BINANCE_CLIENT_ID_RE.match(coid) and BYBIT_ORDER_LINK_ID_RE.match(coid))
