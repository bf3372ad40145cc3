"""The passphrase's two keys: one seals private keys, one authenticates the manifest.

From the operator's passphrase, scrypt (RFC 7914) derives 64 bytes under a random salt kept in
the manifest: the first 32 are an AES-256-GCM key that seals each private key file (the member's
name is the associated data, so a sealed key moved to another name does not open), the last 32
an HMAC-SHA256 key over the manifest's bytes (whoever lacks the passphrase cannot alter a
member and its recorded SHA-256 together). A fixed HMAC, the *check*, tells a wrong passphrase
apart from an altered manifest.

No IO; the cryptography is the ``cryptography`` package's.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from exchange.errors import VerificationFailed

SCRYPT_N: Final = 2**17
"""scrypt cost of new backups: 128 MiB and about half a second per derivation."""
SCRYPT_N_RANGE: Final = (2**14, 2**20)
"""What a backup may ask of the reader (a manifest cannot make a restore take all memory)."""
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
MIN_PASSPHRASE: Final = 12
_CHECK: Final = b"exchange-backup/1 passphrase check"
_AAD: Final = b"exchange-backup/1\x00"
_NONCE: Final = 12


class BackupError(VerificationFailed):
    """A backup is damaged, altered, unsafe to unpack, or not opened by the passphrase given."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    salt: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    @classmethod
    def fresh(cls) -> KdfParams:
        return cls(salt=os.urandom(16))

    def to_json(self) -> dict[str, Any]:
        return {"name": "scrypt", "salt": self.salt.hex(), "n": self.n, "r": self.r, "p": self.p}

    @classmethod
    def from_json(cls, doc: Any) -> KdfParams:
        """The manifest's parameters, refused when outside what a reader accepts."""
        if not isinstance(doc, dict) or doc.get("name") != "scrypt":
            raise BackupError("the backup's key derivation is not scrypt")
        n, r, p, salt = doc.get("n"), doc.get("r"), doc.get("p"), doc.get("salt")
        lo, hi = SCRYPT_N_RANGE
        if not (isinstance(n, int) and lo <= n <= hi and n & (n - 1) == 0):
            raise BackupError(f"the backup asks for scrypt cost {n!r}, outside {lo}..{hi}")
        if r != SCRYPT_R or p != SCRYPT_P:
            raise BackupError(f"the backup asks for scrypt r={r!r} p={p!r}, not 8 and 1")
        try:
            raw = bytes.fromhex(salt) if isinstance(salt, str) else b""
        except ValueError:
            raw = b""
        if not 16 <= len(raw) <= 64:
            raise BackupError("the backup's scrypt salt is not 16 to 64 bytes of hex")
        return cls(salt=raw, n=n, r=r, p=p)


class BackupKeys:
    """The sealing and manifest keys derived from one passphrase."""

    def __init__(self, passphrase: bytes, params: KdfParams) -> None:
        derived = Scrypt(salt=params.salt, length=64, n=params.n, r=params.r, p=params.p).derive(
            passphrase
        )
        self._aead = AESGCM(derived[:32])
        self._mac_key = derived[32:]
        self.params = params

    def check(self) -> str:
        return self._mac(_CHECK)

    def verify_check(self, value: Any) -> None:
        if not isinstance(value, str) or not hmac.compare_digest(value, self.check()):
            raise BackupError(
                "wrong passphrase for this backup (or its manifest's key parameters were altered)"
            )

    def manifest_mac(self, manifest: bytes) -> str:
        return self._mac(manifest)

    def verify_manifest(self, manifest: bytes, mac: bytes) -> None:
        if not hmac.compare_digest(mac.strip(), self.manifest_mac(manifest).encode()):
            raise BackupError(
                "the backup's manifest was altered: its HMAC does not verify with this passphrase"
            )

    def seal(self, name: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, _AAD + name.encode())

    def open(self, name: str, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], _AAD + name.encode())
        except InvalidTag:
            raise BackupError(f"sealed member {name} does not open with this passphrase") from None

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._mac_key, data, sha256).hexdigest()
