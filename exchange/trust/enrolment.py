"""Enrolment tokens: the proof a requester shows the CA service to be issued a certificate.

The CA's operator issues a token (``exchange ca token issue``) for the certificates one
onboarding needs: each *grant* names a profile and an identifier, an authentication certificate
for one security server or a signing certificate for one member. The token is handed to that
server's operator out of band; ``exchange server request-certs`` sends it with each CSR.

Text form ``exe1.<id>.<secret>``: the id (16 hex digits) is public (listed, logged, revoked by
it); the secret is 32 random bytes, base64url. The CA directory's ``enrolment.sqlite`` keeps
only the secret's SHA-256, so a copy of that file issues nothing.

:meth:`EnrolmentStore.redeem` decides, in one write transaction (``BEGIN IMMEDIATE``):
(1) the token is well-formed, (2) its id is known and its secret hashes to the stored hash
(compared in constant time; an unknown id and a wrong secret get the same answer), (3) it is not
revoked, (4) not expired at ``now``, (5) it has a grant for this profile and this identifier,
(6) that grant is unused, or was used for this same public key (then the certificate issued
then is returned again, so an answer lost on the way can be fetched again; another key never
gets one), (7) the certificate is issued and recorded with the grant before the commit: a
failure anywhere rolls back and leaves the grant unused.

Blocking (sqlite3). It issues nothing itself: the caller passes the issuing step in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from exchange.errors import ClientError, ConfigurationError
from exchange.identifiers import MemberId, SecurityServerId
from exchange.transaction import open_versioned_store, write_transaction
from exchange.trust.keys import cert_from_pem, cert_pem
from exchange.trust.profiles import ProfileName

ENROLMENT_FILE: Final = "enrolment.sqlite"
SCHEMA_VERSION: Final = 1
TOKEN_PREFIX: Final = "exe1"
MIN_VALIDITY: Final = dt.timedelta(minutes=1)
MAX_VALIDITY: Final = dt.timedelta(days=30)
DEFAULT_VALIDITY: Final = dt.timedelta(days=3)

_TOKEN = re.compile(r"exe1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")
_ID = re.compile(r"[0-9a-f]{16}")
_NO_SUCH_SECRET: Final = hashlib.sha256(b"no token has this id").digest()

_SCHEMA: Final = """
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    note          TEXT NOT NULL DEFAULT ''
);
CREATE TABLE grants (
    token_id   TEXT NOT NULL REFERENCES tokens (id),
    profile    TEXT NOT NULL CHECK (profile IN ('auth', 'sign')),
    identifier TEXT NOT NULL,
    used_at    INTEGER,
    key_sha256 TEXT,
    cert_pem   TEXT,
    PRIMARY KEY (token_id, profile, identifier),
    CHECK ((used_at IS NULL) = (key_sha256 IS NULL)),
    CHECK ((used_at IS NULL) = (cert_pem IS NULL))
);
"""

Identifier = SecurityServerId | MemberId
TokenState = Literal["active", "used", "expired", "revoked"]
_TITLES: Final[dict[str, str]] = {"auth": "authentication", "sign": "signing"}
_A: Final[dict[str, str]] = {"auth": "an", "sign": "a"}


# --- errors: the requester's fault, each a refusal ---------------------------------------------


class EnrolmentRefused(ClientError):
    """The CA service refuses to issue: no valid enrolment token for this certificate."""

    code = "Client.EnrolmentRefused"
    status = 403


class EnrolmentTokenRequired(EnrolmentRefused):
    code = "Client.EnrolmentTokenRequired"


class InvalidEnrolmentToken(EnrolmentRefused):
    """Malformed, unknown, or a secret that is not the one issued (forged)."""

    code = "Client.InvalidEnrolmentToken"


class EnrolmentTokenExpired(EnrolmentRefused):
    code = "Client.EnrolmentTokenExpired"


class EnrolmentTokenRevoked(EnrolmentRefused):
    code = "Client.EnrolmentTokenRevoked"


class EnrolmentTokenMismatch(EnrolmentRefused):
    """The token is genuine but grants no certificate of this profile for this identifier."""

    code = "Client.EnrolmentTokenMismatch"


class EnrolmentTokenUsed(EnrolmentRefused):
    """The grant was already used, for another key."""

    code = "Client.EnrolmentTokenUsed"


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """One certificate a token allows: ``profile`` for ``identifier``, used once."""

    profile: ProfileName
    identifier: str
    used_at: dt.datetime | None = None
    serial: str | None = None
    """The serial number (hex) of the certificate issued for it, once used."""

    @property
    def title(self) -> str:
        return f"{_TITLES[self.profile]} certificate for {self.identifier}"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What the store knows of a token (never its secret)."""

    id: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    note: str
    grants: tuple[Grant, ...]

    def state(self, now: dt.datetime) -> TokenState:
        if self.revoked_at is not None:
            return "revoked"
        if all(g.used_at is not None for g in self.grants):
            return "used"
        if now >= self.expires_at:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: ``text`` is the secret form, shown once and stored nowhere."""

    info: TokenInfo
    text: str


def _seconds(when: dt.datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return int(when.timestamp())


def _time(seconds: int | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)


def key_sha256(public_key: CertificatePublicKeyTypes) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex: what a grant is bound to."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def parse_token(text: str) -> tuple[str, str]:
    """``(id, secret)`` of a token's text form, or :class:`InvalidEnrolmentToken`."""
    found = _TOKEN.fullmatch(text)
    if found is None:
        raise InvalidEnrolmentToken(
            "the enrolment token is malformed: expected exe1.<id>.<secret> as issued by "
            "'exchange ca token issue'"
        )
    return found.group(1), found.group(2)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


# --- the store ---------------------------------------------------------------------------------


class EnrolmentStore:
    """The tokens of one CA, in the SQLite file at ``path`` (created unless ``create`` is False).

    One connection guarded by a lock; the CA's CLI and its service may share the file from
    different processes.
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise ConfigurationError(
                f"no enrolment tokens at {self.path}: issue one with 'exchange ca token issue'"
            )
        self._lock = threading.Lock()
        self._conn = _open(self.path)

    @classmethod
    def of_ca_dir(cls, ca_dir: str | Path, *, create: bool = True) -> EnrolmentStore:
        return cls(Path(ca_dir) / ENROLMENT_FILE, create=create)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> EnrolmentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def issue(
        self,
        grants: Iterable[tuple[ProfileName, Identifier]],
        *,
        now: dt.datetime,
        valid_for: dt.timedelta = DEFAULT_VALIDITY,
        note: str = "",
    ) -> IssuedToken:
        """A new token for ``grants``, valid from ``now`` for ``valid_for``."""
        wanted = sorted({(profile, str(identifier)) for profile, identifier in grants})
        if not wanted:
            raise ConfigurationError("a token must grant at least one certificate")
        if not MIN_VALIDITY <= valid_for <= MAX_VALIDITY:
            raise ConfigurationError(
                f"a token is valid for {MIN_VALIDITY} to {MAX_VALIDITY.days} days, not {valid_for}"
            )
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        created, expires = _seconds(now), _seconds(now + valid_for)
        with self._write():
            self._conn.execute(
                "INSERT INTO tokens (id, secret_sha256, created_at, expires_at, note) "
                "VALUES (?, ?, ?, ?, ?)",
                (token_id, _hash(secret), created, expires, note),
            )
            self._conn.executemany(
                "INSERT INTO grants (token_id, profile, identifier) VALUES (?, ?, ?)",
                [(token_id, profile, identifier) for profile, identifier in wanted],
            )
            info = self._info(token_id)
        assert info is not None
        return IssuedToken(info=info, text=f"{TOKEN_PREFIX}.{token_id}.{secret}")

    def tokens(self) -> list[TokenInfo]:
        """Every token, oldest first."""
        with self._lock:
            ids = [r[0] for r in self._conn.execute("SELECT id FROM tokens ORDER BY created_at")]
            return [info for info in map(self._info, ids) if info is not None]

    def get(self, token_id: str) -> TokenInfo | None:
        with self._lock:
            return self._info(token_id)

    def revoke(self, token_id: str, *, now: dt.datetime) -> TokenInfo:
        """Revoke a token by its id: its unused grants are never honoured."""
        if not _ID.fullmatch(token_id):
            raise ConfigurationError(f"{token_id!r} is not a token id (16 hex digits)")
        with self._write():
            current = self._info(token_id)
            if current is None:
                raise ConfigurationError(f"no enrolment token {token_id} at {self.path}")
            if current.revoked_at is not None:
                raise ConfigurationError(
                    f"enrolment token {token_id} was already revoked at "
                    f"{current.revoked_at.isoformat()}"
                )
            self._conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ?", (_seconds(now), token_id)
            )
            revoked = self._info(token_id)
        assert revoked is not None
        return revoked

    def redeem(
        self,
        token: str,
        profile: ProfileName,
        identifier: Identifier,
        public_key: CertificatePublicKeyTypes,
        *,
        now: dt.datetime,
        issue: Callable[[], x509.Certificate],
    ) -> x509.Certificate:
        """The certificate ``token`` allows for ``profile``, ``identifier`` and ``public_key``.

        ``issue`` is called (inside the transaction) only when a new certificate is due; an
        :class:`EnrolmentRefused` subclass says why a token is refused.
        """
        # (1) a well-formed token
        token_id, secret = parse_token(token)
        wanted, key = str(identifier), key_sha256(public_key)
        with self._write():
            # (2) known, and the secret is the one issued (constant time; unknown = forged)
            row = self._conn.execute(
                "SELECT secret_sha256, expires_at, revoked_at FROM tokens WHERE id = ?",
                (token_id,),
            ).fetchone()
            stored = bytes(row[0]) if row is not None else _NO_SUCH_SECRET
            if not hmac.compare_digest(stored, _hash(secret)) or row is None:
                raise InvalidEnrolmentToken(
                    "the enrolment token is not one this CA issued",
                    internal=f"enrolment token {token_id}: unknown id or wrong secret",
                )
            # (3) not revoked, (4) not expired
            _check_live(token_id, row[1], row[2], now)
            # (5) a grant for this profile and identifier
            grant = self._grant(token_id, profile, wanted)
            # (6) unused, or used by this same key: the same certificate again
            if grant[0] is not None:
                return _again(token_id, profile, wanted, grant, key)
            # (7) issue and record with the grant, in this transaction
            cert = issue()
            self._conn.execute(
                "UPDATE grants SET used_at = ?, key_sha256 = ?, cert_pem = ? "
                "WHERE token_id = ? AND profile = ? AND identifier = ?",
                (_seconds(now), key, cert_pem(cert), token_id, profile, wanted),
            )
        return cert

    def _grant(
        self, token_id: str, profile: ProfileName, identifier: str
    ) -> tuple[int | None, str | None, str | None]:
        rows = self._conn.execute(
            "SELECT profile, identifier, used_at, key_sha256, cert_pem FROM grants "
            "WHERE token_id = ? ORDER BY profile, identifier",
            (token_id,),
        ).fetchall()
        for row_profile, row_identifier, used_at, key, pem in rows:
            if (row_profile, row_identifier) == (profile, identifier):
                return used_at, key, pem
        granted = "; ".join(Grant(p, i).title for p, i, *_ in rows)
        raise EnrolmentTokenMismatch(
            f"the enrolment token does not grant {_A[profile]} {_TITLES[profile]} certificate for "
            f"{identifier}; it grants: {granted}",
            internal=f"enrolment token {token_id} presented for {profile} {identifier}",
        )

    @staticmethod
    def _read_grant(row: tuple[str, str, int | None, str | None]) -> Grant:
        profile, identifier, used_at, pem = row
        serial = None if pem is None else f"{cert_from_pem(pem).serial_number:x}"
        name: ProfileName = "auth" if profile == "auth" else "sign"
        return Grant(name, identifier, _time(used_at), serial)

    def _info(self, token_id: str) -> TokenInfo | None:
        row = self._conn.execute(
            "SELECT created_at, expires_at, revoked_at, note FROM tokens WHERE id = ?",
            (token_id,),
        ).fetchone()
        if row is None:
            return None
        grants = self._conn.execute(
            "SELECT profile, identifier, used_at, cert_pem FROM grants WHERE token_id = ? "
            "ORDER BY profile, identifier",
            (token_id,),
        ).fetchall()
        created, expires = _time(row[0]), _time(row[1])
        assert created is not None and expires is not None
        return TokenInfo(
            id=token_id,
            created_at=created,
            expires_at=expires,
            revoked_at=_time(row[2]),
            note=row[3],
            grants=tuple(self._read_grant(g) for g in grants),
        )

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """Under the lock, in ``BEGIN IMMEDIATE``: another process writing waits for the lock."""
        with self._lock, write_transaction(self._conn):
            yield


def _check_live(token_id: str, expires_at: int, revoked_at: int | None, now: dt.datetime) -> None:
    if revoked_at is not None:
        raise EnrolmentTokenRevoked(
            f"the enrolment token {token_id} was revoked; ask the CA's operator for a new one"
        )
    expires = _time(expires_at)
    assert expires is not None
    if now >= expires:
        raise EnrolmentTokenExpired(
            f"the enrolment token {token_id} expired at {expires.isoformat()}; "
            "ask the CA's operator for a new one"
        )


def _again(
    token_id: str,
    profile: ProfileName,
    identifier: str,
    grant: tuple[int | None, str | None, str | None],
    key: str,
) -> x509.Certificate:
    _, used_key, pem = grant
    if used_key != key or pem is None:
        raise EnrolmentTokenUsed(
            f"the enrolment token {token_id} was already used for the {_TITLES[profile]} "
            f"certificate for {identifier}, with another key; ask the CA's operator for a new one"
        )
    return cert_from_pem(pem)


def _open(path: Path) -> sqlite3.Connection:
    """Open (creating) the store; :class:`ConfigurationError` if the file is something else."""
    return open_versioned_store(path, _SCHEMA, SCHEMA_VERSION, "an enrolment token store")
