"""Listing a message log's signed tree heads, for an auditor to pick the one a proof leads to.

:func:`iter_heads` streams the tree heads as the log stores them, archived ones first (read from
the archive files), each with its RFC 3161 time-stamp time when it has one and the signing
certificate its JWS names (looked up in the log's ``certs`` table). Every group commit signs a
head; only some are time-stamped (at start, on the configuration's interval, at shutdown, and
on demand), and only a time-stamped head proves when the records under it existed.

Nothing here verifies anything: the list is what the file says. ``exchange log verify`` checks
every head against the records and the log's owner; ``exchange log check-proof --trust`` checks
the head a proof names, with its time-stamp.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from exchange.errors import ExchangeError
from exchange.messagelog.archive import ArchiveFile, ArchiveFileError, archive_file, read_index
from exchange.messagelog.certs import CertLookup, certificates_of_log
from exchange.messagelog.store import MessageLogError, iter_rows, open_readonly
from exchange.protocol import jws
from exchange.protocol.canonical import b64url
from exchange.trust.profiles import member_id_of_signing_cert
from exchange.utc import iso_millis

_LIVE = (
    "SELECT h.size, h.root, h.signed_at, h.jws, t.gen_time, t.tsa FROM tree_heads h "
    "LEFT JOIN timestamps t ON t.size = h.size WHERE h.size > ? ORDER BY h.size"
)


@dataclass(frozen=True, slots=True)
class HeadSigner:
    """The certificate a tree head's JWS names (``x5t#S256``), as the log holds it."""

    subject: str
    serial: int
    member: str | None
    """The member a signing certificate names; None for any other certificate."""
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def of(cls, cert: x509.Certificate) -> HeadSigner:
        try:
            member: str | None = str(member_id_of_signing_cert(cert))
        except ExchangeError:
            member = None
        return cls(
            cert.subject.rfc4514_string(),
            cert.serial_number,
            member,
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "serial": f"{self.serial:x}",
            "member": self.member,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class HeadView:
    """One signed tree head as stored: size, root, signing time, time-stamp, signer."""

    size: int
    root: bytes
    signed_at: int
    """Unix milliseconds, as the head states it."""
    jws: str
    thumbprint: str | None
    signer: HeadSigner | None
    stamped_at: int | None
    """The time-stamp's genTime (unix milliseconds) as stored, when the head has one."""
    tsa: str | None
    archive: str | None
    """The archive file it was read from; None for a head in the database."""

    def signed_at_text(self) -> str:
        return iso_millis(self.signed_at)

    def stamped_at_text(self) -> str:
        return "" if self.stamped_at is None else iso_millis(self.stamped_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": b64url(self.root),
            "root_hex": self.root.hex(),
            "signed_at": self.signed_at_text(),
            "time_stamped_at": self.stamped_at_text() or None,
            "tsa": self.tsa,
            "signer_certificate": self.thumbprint,
            "signer": self.signer.to_dict() if self.signer else None,
            "archive": self.archive,
            "jws": self.jws,
        }


@dataclass(frozen=True, slots=True)
class HeadFilter:
    """Which heads to list: only time-stamped ones, only those whose tree holds record
    ``covers`` (size > covers), signed in [since, until)."""

    stamped: bool = False
    covers: int | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def __call__(self, size: int, signed_at: int, stamped: bool) -> bool:
        if self.stamped and not stamped:
            return False
        if self.covers is not None and size <= self.covers:
            return False
        if self.since is not None and signed_at < _ms(self.since):
            return False
        return self.until is None or signed_at < _ms(self.until)


def iter_heads(
    path: str | Path, where: HeadFilter = HeadFilter(), *, archive_dir: str | Path | None = None
) -> Iterator[HeadView]:
    """The signed tree heads matching ``where``, smallest first, streamed; with ``archive_dir``,
    the archived ones first. Raises ConfigurationError when ``path`` is not a log (on the first
    head asked for) and MessageLogError when an archive cannot be read."""
    conn = open_readonly(path)
    signers = _Signers(conn)
    try:
        last = -1
        if archive_dir is not None:
            for head in _archived(conn, Path(archive_dir), signers):
                last = head.size
                if where(head.size, head.signed_at, head.stamped_at is not None):
                    yield head
        for size, root, signed_at, token, gen_time, tsa in iter_rows(
            conn.execute(_LIVE, (last,)), chunk=256
        ):
            if where(size, signed_at, gen_time is not None):
                yield _view(size, root, signed_at, token, gen_time, tsa, None, signers)
    finally:
        conn.close()


def _archived(conn: sqlite3.Connection, folder: Path, signers: _Signers) -> Iterator[HeadView]:
    for entry in read_index(conn):
        try:
            with ArchiveFile(archive_file(folder, entry.file)) as archive:
                stamps = {
                    size: gen_time
                    for size, _, gen_time in archive.stamps()
                    if isinstance(size, int) and isinstance(gen_time, int)
                }
                for size, root, signed_at, token in archive.heads():
                    if not (isinstance(size, int) and isinstance(signed_at, int)):
                        continue
                    yield _view(
                        size,
                        root or b"",
                        signed_at,
                        str(token),
                        stamps.get(size),
                        None,
                        entry.file,
                        signers,
                    )
        except ArchiveFileError as exc:
            raise MessageLogError(
                f"archive {entry.file} cannot be read ({exc}); run `exchange log verify`"
            ) from None


def _view(
    size: int,
    root: bytes,
    signed_at: int,
    token: str,
    gen_time: int | None,
    tsa: str | None,
    archive: str | None,
    signers: _Signers,
) -> HeadView:
    try:
        thumbprint = jws.unverified_header(token).get("x5t#S256")
    except ExchangeError:
        thumbprint = None
    thumb = thumbprint if isinstance(thumbprint, str) else None
    signer = signers.get(thumb) if thumb is not None else None
    return HeadView(size, bytes(root), signed_at, token, thumb, signer, gen_time, tsa, archive)


class _Signers:
    """The signers of the log's certificates by thumbprint, each read once: only the certificate
    a thumbprint names (another one stored in its place is none)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._certs = CertLookup(certificates_of_log(conn), ())
        self._known: dict[str, HeadSigner | None] = {}

    def get(self, thumbprint: str) -> HeadSigner | None:
        if thumbprint not in self._known:
            cert = self._certs.get(thumbprint)
            self._known[thumbprint] = HeadSigner.of(cert) if cert is not None else None
        return self._known[thumbprint]


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)
