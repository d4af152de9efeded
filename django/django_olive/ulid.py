"""Message ids in olive's format (ULID: 48 bits of milliseconds, 80 random
bits, 26 characters of Crockford base32), so that ids Django makes sort
with the ids olive makes, and the recovery endpoint can answer "after ID"."""

import secrets
import threading
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last = 0


def encode(value):
    chars = []
    for _ in range(26):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new():
    """A fresh id, greater than every id this process made before."""
    global _last
    now = time.time_ns() // 1_000_000
    with _lock:
        value = (now << 80) | secrets.randbits(80)
        if value <= _last:
            value = _last + 1
        _last = value
    return encode(value)


def timestamp_ms(text):
    """The milliseconds an id carries, or None if it is not an id."""
    if len(text) != 26:
        return None
    value = 0
    for ch in text.upper():
        i = ALPHABET.find(ch)
        if i < 0:
            return None
        value = value * 32 + i
    return value >> 80
