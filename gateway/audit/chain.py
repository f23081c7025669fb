"""The HMAC chain that makes the trail tamper-evident.

Line format (one record, one line, ``\\n`` terminated)::

    {"@timestamp":"...","seq":N, ...record... ,"chain":"<64 lower-case hex>"}

    prefix  = the line's bytes before ``,"chain":"`` (starts with ``{``)
    chain_N = hex(HMAC-SHA256(key, chain_{N-1} || prefix))

``chain_{N-1}`` is the previous record's chain as its 64 ASCII hex bytes, and
:data:`GENESIS` (64 ASCII zeros) before the first record of a trail.  A
verifier recomputes each MAC from the raw line bytes, with no JSON
re-serialization, and because each line's predecessor value is stored in the
predecessor line, every line can be checked on its own: editing, deleting or
reordering any line breaks the MAC of that line or of its successor.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from pathlib import Path
from typing import Any

from gateway.settings import ConfigError

from .schema import dumps_record

GENESIS = b"0" * 64
CHAIN_KEY = b',"chain":"'
CHAIN_END = b'"}'
LINE_END = CHAIN_END + b"\n"
SUFFIX_LEN = len(CHAIN_KEY) + 64 + len(CHAIN_END)  # 76
MIN_KEY_BYTES = 16

_HEX = re.compile(rb"[0-9a-fA-F]+\Z")
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def parse_key(raw: bytes, *, source: str = "audit.key_file") -> bytes:
    """Key file content -> key bytes.

    Surrounding whitespace is stripped.  Content that is all hex digits, of
    even length and at least 32 digits, is hex-decoded; anything else is used
    as raw bytes.  Fewer than 16 key bytes is refused.
    """
    k = raw.strip()
    if _HEX.match(k) and len(k) % 2 == 0 and len(k) >= 2 * MIN_KEY_BYTES:
        k = binascii.unhexlify(k)
    if len(k) < MIN_KEY_BYTES:
        raise ConfigError(source, f"audit key is too short ({len(k)} bytes; need at least {MIN_KEY_BYTES}, 32 random bytes as hex recommended)")
    return k


def load_key(path: Path, *, source: str = "audit.key_file") -> bytes:
    """Read and parse a key file; problems raise ConfigError naming ``source``."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, f"file not found: {path}") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise ConfigError(source, f"cannot read {path}: {exc.strerror}") from None
    return parse_key(raw, source=source)


class Mac:
    """HMAC-SHA256 with the padded key states computed once.

    Same result as ``hmac.new(key, prev + prefix, "sha256")`` but about twice
    as fast here: OpenSSL 3's one-shot HMAC pays a provider lookup per call.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def hexdigest(self, prev: bytes, prefix: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(prev)
        inner.update(prefix)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return binascii.hexlify(outer.digest())


def split_line(line: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, chain) of one line without its newline, or None if not a chained record."""
    if len(line) <= SUFFIX_LEN or line[-SUFFIX_LEN : -SUFFIX_LEN + len(CHAIN_KEY)] != CHAIN_KEY or line[-2:] != CHAIN_END:
        return None
    return line[:-SUFFIX_LEN], line[-66:-2]


class Signer:
    """The chain head: assigns ``seq``, serializes and MACs records, one at a time."""

    __slots__ = ("mac", "seq", "chain", "_saved")

    def __init__(self, mac: Mac, seq: int = 0, chain: bytes = GENESIS) -> None:
        self.mac = mac
        self.seq = seq
        self.chain = chain
        self._saved = (seq, chain)

    def sign(self, record: dict[str, Any]) -> bytes:
        """Return the full line (with ``\\n``) and advance the chain."""
        self._saved = (self.seq, self.chain)
        seq = self.seq + 1
        record["seq"] = seq
        prefix = dumps_record(record)[:-1]
        chain = self.mac.hexdigest(self.chain, prefix)
        self.seq = seq
        self.chain = chain
        return b"".join((prefix, CHAIN_KEY, chain, LINE_END))

    def undo(self) -> None:
        """Forget the last sign() (the line was not written; a rotation goes first)."""
        self.seq, self.chain = self._saved
