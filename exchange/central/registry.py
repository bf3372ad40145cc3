"""The central server's registry: who is in the federation, stored in SQLite (WAL).

Holds the instance, members, subsystems, security servers (owner, provider address, the SHA-256
fingerprints of their authentication certificates - several during a rotation - and the client
subsystems they host), global groups and their members, approved CAs and TSAs, settings, and a
monotonic ``version`` counter that every change bumps in the same transaction. The central server
publishes :meth:`Registry.build_globalconf` and notices changes made by the CLI from another process
by reading that counter.

Every method checks its input and refers only to entries that exist; unknown or duplicate entries
raise :class:`~exchange.errors.ConfigurationError` saying what to do. Removing a subsystem also
removes it from server client lists and global groups; a member is removed only once it owns no
subsystems or security servers.

Blocking (sqlite3): async code runs it on one worker thread, the thread that opened it (the
connection refuses other threads). It does not sign or serve anything.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from sqlite_utils import Database

from exchange.errors import ConfigurationError, InvalidIdentifier
from exchange.globalconf.document import (
    ApprovedCA,
    ApprovedTSA,
    GlobalConf,
    GlobalGroup,
    MemberInfo,
    SecurityServerInfo,
    Settings,
    valid_address,
)
from exchange.identifiers import (
    ClientId,
    GlobalGroupId,
    MemberId,
    SecurityServerId,
    SubsystemId,
    parse_client,
    parse_global_group,
    parse_member,
    parse_security_server,
    parse_subsystem,
    validate_part,
)
from exchange.transaction import write_transaction
from exchange.trust.keys import cert_pem

SCHEMA_VERSION: Final = 1
_HEX_FINGERPRINT: Final = re.compile(r"[0-9a-f]{64}")

_TABLES: Final[dict[str, tuple[dict[str, type], str | tuple[str, ...]]]] = {
    "meta": ({"id": int, "instance": str, "version": int, "schema": int}, "id"),
    "settings": ({"name": str, "value": int}, "name"),
    "members": ({"id": str, "name": str}, "id"),
    "subsystems": ({"id": str, "member": str}, "id"),
    "servers": ({"id": str, "owner": str, "address": str}, "id"),
    "auth_certs": ({"fingerprint": str, "server": str}, "fingerprint"),
    "server_clients": ({"server": str, "subsystem": str}, ("server", "subsystem")),
    "global_groups": ({"id": str, "description": str}, "id"),
    "group_members": ({"group_id": str, "client": str}, ("group_id", "client")),
    "approved_cas": ({"name": str, "cert_pem": str, "ocsp_urls": str}, "name"),
    "approved_tsas": ({"name": str, "url": str, "cert_pem": str}, "name"),
}


def normalise_fingerprint(text: str) -> str:
    """Lowercase hex without separators; accepts ``openssl -fingerprint`` style ``AB:CD:...``."""
    fp = text.strip().replace(":", "").lower()
    if _HEX_FINGERPRINT.fullmatch(fp) is None:
        raise ConfigurationError(
            f"invalid certificate fingerprint {text[:100]!r}: expected SHA-256 as 64 hex digits"
        )
    return fp


class Registry:
    """The central server's database. Open with :meth:`create` or :meth:`open`; close after use."""

    def __init__(self, db: Database, instance: str) -> None:
        self._db = db
        self.instance = instance

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, instance: str, settings: Settings | None = None) -> Registry:
        """Create a new registry database for ``instance``; refuses an existing one."""
        try:
            validate_part(instance, "instance")
        except InvalidIdentifier as exc:
            raise ConfigurationError(exc.message) from None
        p = Path(path)
        if p.exists():
            raise ConfigurationError(f"{p} already exists; use it or choose another path")
        p.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(p)
        with write_transaction(db.conn):
            for name, (columns, pk) in _TABLES.items():
                db.create_table(name, columns, pk=pk)
            db.table("meta").insert({"id": 1, "instance": instance, "version": 1, "schema": 1})
            db.table("settings").insert_all(_settings_rows(settings or Settings()))
        return cls(db, instance)

    @classmethod
    def open(cls, path: str | Path) -> Registry:
        p = Path(path)
        if not p.is_file():
            raise ConfigurationError(
                f"central registry {p} does not exist; create it with `exchange central init`"
            )
        try:
            db = _connect(p)
        except sqlite3.DatabaseError:
            raise ConfigurationError(f"{p} is not a central registry database") from None
        try:
            row = db.execute("SELECT instance, schema FROM meta WHERE id = 1").fetchone()
        except sqlite3.DatabaseError:
            row = None
        if row is None or row[1] != SCHEMA_VERSION:
            db.close()
            raise ConfigurationError(f"{p} is not a central registry database")
        return cls(db, str(row[0]))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- state ---------------------------------------------------------------------------------

    def version(self) -> int:
        """The change counter (cheap; the central server reads it every second)."""
        return int(self._db.execute("SELECT version FROM meta WHERE id = 1").fetchone()[0])

    def settings(self) -> Settings:
        rows = self._db.execute("SELECT name, value FROM settings").fetchall()
        known = {f.name for f in fields(Settings)}
        return Settings(**{name: int(value) for name, value in rows if name in known})

    def set_settings(self, settings: Settings) -> bool:
        """Store ``settings``; bumps the version only if something changed."""
        if settings == self.settings():
            return False
        with self._change():
            self._db.table("settings").upsert_all(_settings_rows(settings), pk="name")
        return True

    # --- members and subsystems ----------------------------------------------------------------

    def add_member(self, member: MemberId, name: str) -> int:
        self._check_instance(member)
        with self._change():
            self._refuse_existing("members", "id", member, "member")
            self._db.table("members").insert(
                {"id": str(member), "name": _text(name, "member name")}
            )
        return self.version()

    def remove_member(self, member: MemberId) -> int:
        with self._change():
            self._require("members", "id", member, "member")
            if self._exists("subsystems", "member", member) or self._exists(
                "servers", "owner", member
            ):
                raise ConfigurationError(
                    f"member {member} still owns subsystems or security servers; remove them first"
                )
            self._delete("group_members", "client", member)
            self._delete("members", "id", member)
        return self.version()

    def add_subsystem(self, subsystem: SubsystemId) -> int:
        self._check_instance(subsystem)
        with self._change():
            self._require("members", "id", subsystem.member, "member")
            self._refuse_existing("subsystems", "id", subsystem, "subsystem")
            self._db.table("subsystems").insert(
                {"id": str(subsystem), "member": str(subsystem.member)}
            )
        return self.version()

    def remove_subsystem(self, subsystem: SubsystemId) -> int:
        with self._change():
            self._require("subsystems", "id", subsystem, "subsystem")
            self._delete("server_clients", "subsystem", subsystem)
            self._delete("group_members", "client", subsystem)
            self._delete("subsystems", "id", subsystem)
        return self.version()

    # --- security servers ----------------------------------------------------------------------

    def add_server(
        self, server: SecurityServerId, address: str, auth_cert_fingerprints: Iterable[str] = ()
    ) -> int:
        self._check_instance(server)
        fingerprints = [normalise_fingerprint(fp) for fp in auth_cert_fingerprints]
        with self._change():
            self._require("members", "id", server.owner, "member")
            self._refuse_existing("servers", "id", server, "security server")
            self._db.table("servers").insert(
                {"id": str(server), "owner": str(server.owner), "address": _address(address)}
            )
            for fp in fingerprints:
                self._insert_auth_cert(server, fp)
        return self.version()

    def remove_server(self, server: SecurityServerId) -> int:
        with self._change():
            self._require("servers", "id", server, "security server")
            self._delete("auth_certs", "server", server)
            self._delete("server_clients", "server", server)
            self._delete("servers", "id", server)
        return self.version()

    def set_server_address(self, server: SecurityServerId, address: str) -> int:
        with self._change():
            self._require("servers", "id", server, "security server")
            self._db.table("servers").update(str(server), {"address": _address(address)})
        return self.version()

    def add_auth_cert(self, server: SecurityServerId, fingerprint: str) -> int:
        fp = normalise_fingerprint(fingerprint)
        with self._change():
            self._require("servers", "id", server, "security server")
            self._insert_auth_cert(server, fp)
        return self.version()

    def remove_auth_cert(self, server: SecurityServerId, fingerprint: str) -> int:
        fp = normalise_fingerprint(fingerprint)
        with self._change():
            row = self._db.execute(
                "SELECT 1 FROM auth_certs WHERE fingerprint = ? AND server = ?", [fp, str(server)]
            ).fetchone()
            if row is None:
                raise ConfigurationError(
                    f"authentication certificate {fp} is not registered for {server}"
                )
            self._delete("auth_certs", "fingerprint", fp)
        return self.version()

    def add_server_client(self, server: SecurityServerId, subsystem: SubsystemId) -> int:
        with self._change():
            self._require("servers", "id", server, "security server")
            self._require("subsystems", "id", subsystem, "subsystem")
            if self._pair_exists("server_clients", "server", server, "subsystem", subsystem):
                raise ConfigurationError(f"{subsystem} is already a client of {server}")
            self._db.table("server_clients").insert(
                {"server": str(server), "subsystem": str(subsystem)}
            )
        return self.version()

    def remove_server_client(self, server: SecurityServerId, subsystem: SubsystemId) -> int:
        with self._change():
            if not self._pair_exists("server_clients", "server", server, "subsystem", subsystem):
                raise ConfigurationError(f"{subsystem} is not a client of {server}")
            self._db.execute(
                "DELETE FROM server_clients WHERE server = ? AND subsystem = ?",
                [str(server), str(subsystem)],
            )
        return self.version()

    # --- global groups -------------------------------------------------------------------------

    def add_group(self, group: GlobalGroupId, description: str) -> int:
        self._check_instance(group)
        with self._change():
            self._refuse_existing("global_groups", "id", group, "global group")
            self._db.table("global_groups").insert(
                {"id": str(group), "description": _text(description, "group description")}
            )
        return self.version()

    def remove_group(self, group: GlobalGroupId) -> int:
        with self._change():
            self._require("global_groups", "id", group, "global group")
            self._delete("group_members", "group_id", group)
            self._delete("global_groups", "id", group)
        return self.version()

    def add_group_member(self, group: GlobalGroupId, client: ClientId) -> int:
        with self._change():
            self._require("global_groups", "id", group, "global group")
            if isinstance(client, SubsystemId):
                self._require("subsystems", "id", client, "subsystem")
            else:
                self._require("members", "id", client, "member")
            if self._pair_exists("group_members", "group_id", group, "client", client):
                raise ConfigurationError(f"{client} is already in global group {group}")
            self._db.table("group_members").insert({"group_id": str(group), "client": str(client)})
        return self.version()

    def remove_group_member(self, group: GlobalGroupId, client: ClientId) -> int:
        with self._change():
            if not self._pair_exists("group_members", "group_id", group, "client", client):
                raise ConfigurationError(f"{client} is not in global group {group}")
            self._db.execute(
                "DELETE FROM group_members WHERE group_id = ? AND client = ?",
                [str(group), str(client)],
            )
        return self.version()

    # --- trust services ------------------------------------------------------------------------

    def add_ca(self, name: str, pem: str, ocsp_urls: Iterable[str] = ()) -> int:
        row = {
            "name": _text(name, "CA name"),
            "cert_pem": _one_cert_pem(pem, f"CA {name!r}"),
            "ocsp_urls": json.dumps([_url(u, "OCSP URL") for u in ocsp_urls]),
        }
        with self._change():
            self._refuse_existing("approved_cas", "name", name, "approved CA")
            self._db.table("approved_cas").insert(row)
        return self.version()

    def remove_ca(self, name: str) -> int:
        with self._change():
            self._require("approved_cas", "name", name, "approved CA")
            self._delete("approved_cas", "name", name)
        return self.version()

    def add_tsa(self, name: str, url: str, pem: str) -> int:
        row = {
            "name": _text(name, "TSA name"),
            "url": _url(url, "TSA URL"),
            "cert_pem": _one_cert_pem(pem, f"TSA {name!r}"),
        }
        with self._change():
            self._refuse_existing("approved_tsas", "name", name, "approved TSA")
            self._db.table("approved_tsas").insert(row)
        return self.version()

    def remove_tsa(self, name: str) -> int:
        with self._change():
            self._require("approved_tsas", "name", name, "approved TSA")
            self._delete("approved_tsas", "name", name)
        return self.version()

    # --- the document --------------------------------------------------------------------------

    def build_globalconf(self, now: int) -> GlobalConf:
        """The configuration to publish: version = the change counter, expiring after the
        ``globalconf_expiry_seconds`` setting. Read in one snapshot, in a stable order."""
        with self._snapshot():
            settings = self.settings()
            return GlobalConf(
                instance=self.instance,
                version=self.version(),
                generated_at=now,
                expires_at=now + settings.globalconf_expiry_seconds,
                members=self._members(),
                security_servers=self._servers(),
                approved_cas=self._cas(),
                approved_tsas=self._tsas(),
                global_groups=self._groups(),
                settings=settings,
            )

    def _members(self) -> tuple[MemberInfo, ...]:
        subsystems = self._grouped("SELECT member, id FROM subsystems ORDER BY id")
        return tuple(
            MemberInfo(
                id=parse_member(row["id"]),
                name=row["name"],
                subsystems=tuple(parse_subsystem(s) for s in subsystems.get(row["id"], [])),
            )
            for row in self._db.query("SELECT id, name FROM members ORDER BY id")
        )

    def _servers(self) -> tuple[SecurityServerInfo, ...]:
        certs = self._grouped("SELECT server, fingerprint FROM auth_certs ORDER BY fingerprint")
        clients = self._grouped("SELECT server, subsystem FROM server_clients ORDER BY subsystem")
        return tuple(
            SecurityServerInfo(
                id=parse_security_server(row["id"]),
                address=row["address"],
                auth_cert_fingerprints=tuple(certs.get(row["id"], [])),
                clients=tuple(parse_subsystem(c) for c in clients.get(row["id"], [])),
            )
            for row in self._db.query("SELECT id, address FROM servers ORDER BY id")
        )

    def _groups(self) -> tuple[GlobalGroup, ...]:
        members = self._grouped("SELECT group_id, client FROM group_members ORDER BY client")
        return tuple(
            GlobalGroup(
                id=parse_global_group(row["id"]),
                description=row["description"],
                members=tuple(parse_client(c) for c in members.get(row["id"], [])),
            )
            for row in self._db.query("SELECT id, description FROM global_groups ORDER BY id")
        )

    def _cas(self) -> tuple[ApprovedCA, ...]:
        return tuple(
            ApprovedCA(
                name=row["name"],
                cert_pem=row["cert_pem"],
                ocsp_urls=tuple(json.loads(row["ocsp_urls"])),
            )
            for row in self._db.query("SELECT * FROM approved_cas ORDER BY name")
        )

    def _tsas(self) -> tuple[ApprovedTSA, ...]:
        return tuple(
            ApprovedTSA(name=row["name"], url=row["url"], cert_pem=row["cert_pem"])
            for row in self._db.query("SELECT * FROM approved_tsas ORDER BY name")
        )

    def advance_version(self, above: int) -> int:
        """Make the next published version higher than ``above`` (after a restore from a backup
        older than what security servers hold, which refuse a lower or a re-signed equal
        version); the counter never goes down."""
        with write_transaction(self._db.conn):
            self._db.execute("UPDATE meta SET version = max(version, ?) WHERE id = 1", [above + 1])
        return self.version()

    def _grouped(self, sql: str) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for key, value in self._db.execute(sql).fetchall():
            grouped.setdefault(key, []).append(value)
        return grouped

    # --- helpers -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _change(self) -> Iterator[None]:
        """One write transaction that also bumps the version counter."""
        with write_transaction(self._db.conn):
            yield
            self._db.execute("UPDATE meta SET version = version + 1 WHERE id = 1")

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def _check_instance(
        self, identifier: MemberId | SubsystemId | SecurityServerId | GlobalGroupId
    ) -> None:
        if identifier.instance != self.instance:
            raise ConfigurationError(
                f"{identifier} is not in instance {self.instance}: "
                f"identifiers here start with {self.instance}/"
            )

    def _exists(self, table: str, column: str, key: object) -> bool:
        sql = f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1"
        return self._db.execute(sql, [str(key)]).fetchone() is not None

    def _pair_exists(self, table: str, c1: str, k1: object, c2: str, k2: object) -> bool:
        sql = f"SELECT 1 FROM {table} WHERE {c1} = ? AND {c2} = ?"
        return self._db.execute(sql, [str(k1), str(k2)]).fetchone() is not None

    def _require(self, table: str, column: str, key: object, what: str) -> None:
        if not self._exists(table, column, key):
            raise ConfigurationError(f"unknown {what} {key}: add it first")

    def _refuse_existing(self, table: str, column: str, key: object, what: str) -> None:
        if self._exists(table, column, key):
            raise ConfigurationError(f"{what} {key} is already registered")

    def _delete(self, table: str, column: str, key: object) -> None:
        self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", [str(key)])

    def _insert_auth_cert(self, server: SecurityServerId, fp: str) -> None:
        row = self._db.execute(
            "SELECT server FROM auth_certs WHERE fingerprint = ?", [fp]
        ).fetchone()
        if row is not None:
            raise ConfigurationError(
                f"authentication certificate {fp} is already registered for {row[0]}"
            )
        self._db.table("auth_certs").insert({"fingerprint": fp, "server": str(server)})


def _connect(path: Path) -> Database:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        db = Database(conn)
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA foreign_keys = ON")
        db.enable_wal()
    except BaseException:
        conn.close()
        raise
    return db


def _settings_rows(settings: Settings) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in asdict(settings).items()]


def _text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 1000:
        raise ConfigurationError(f"{what} must be non-empty text (at most 1000 characters)")
    return value


def _address(address: str) -> str:
    if not valid_address(address):
        raise ConfigurationError(f"invalid address {address!r}: expected host:port")
    return address


def _url(url: str, what: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"invalid {what} {url!r}: expected http:// or https://")
    return url


def _one_cert_pem(pem: str, what: str) -> str:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("utf-8"))
    except ValueError:
        raise ConfigurationError(f"{what}: not a PEM certificate") from None
    return cert_pem(cert)
