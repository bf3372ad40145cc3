"""What a running security server says about itself: the body of ``/health``, the facts that
:func:`~exchange.server.health.judge` decides on, and the state ``/metrics`` exports.

Read-only: it gathers from the server's parts at one reference time and changes nothing (the
key probe's cached verdict aside).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography import x509

from exchange.globalconf.client import GlobalConfPoller
from exchange.globalconf.document import GlobalConf
from exchange.identifiers import MemberId, SecurityServerId
from exchange.messagelog.store import MessageLog
from exchange.messagelog.timestamping import TreeHeadStamper
from exchange.policy.loader import PolicyStore
from exchange.protocol.jws import Signer, cert_thumbprint
from exchange.server.config import ServerConfig
from exchange.server.declare import ServiceDeclarer
from exchange.server.handshakes import HandshakeLimits
from exchange.server.health import HealthFacts, OwnCertificate, Verdict, judge
from exchange.server.maintenance import MaintenanceWatch
from exchange.server.metrics import CertificateState, StateSnapshot
from exchange.server.ownkeys import KeyProbe
from exchange.server.peer import PeerPool
from exchange.server.provider import ProviderConnection
from exchange.server.revocation import RevocationChecks
from exchange.utc import iso_seconds


class Reported(Protocol):
    """What the report reads of the security server (attributes that change as it runs:
    the configuration in force, the keys after a rotation, the policy after a reload)."""

    config: ServerConfig
    clock: Callable[[], float]
    in_force: GlobalConf | None
    poller: GlobalConfPoller | None
    maintenance: MaintenanceWatch
    stopping: bool
    own_certs: list[x509.Certificate]
    auth_cert: x509.Certificate
    signers: dict[MemberId, Signer]
    revocation: RevocationChecks
    stamper: TreeHeadStamper
    log: MessageLog
    policy: PolicyStore | None
    declarer: ServiceDeclarer
    provider_connections: set[ProviderConnection]
    pools: dict[SecurityServerId, PeerPool]
    handshakes: HandshakeLimits
    consumer_handshakes: HandshakeLimits

    @property
    def consumer_https(self) -> bool: ...
    @property
    def archiving(self) -> Mapping[str, Any]: ...
    def expiring_certificates(self) -> list[str]: ...


class SelfReport:
    def __init__(self, server: Reported) -> None:
        self._server = server
        self._probe = KeyProbe()

    def health(self) -> dict[str, Any]:
        """What ``/health`` on the status listener shows: the verdict (status, reasons,
        warnings) and the state behind it."""
        s = self._server
        conf = s.in_force
        now = s.clock()
        verdict = judge(self.facts(now))
        pending = s.poller.pending if s.poller is not None else None
        maintenance = s.maintenance.current
        return {
            **verdict.to_dict(),
            "server": str(s.config.server_id),
            "maintenance": None if maintenance is None else maintenance.to_dict(),
            "globalconf_version": conf.version if conf else None,
            "globalconf_fresh": bool(conf and not conf.is_expired(int(now))),
            # a verified version that could not be put in force yet, and why
            "globalconf_pending": None if pending is None else dataclasses.asdict(pending),
            "globalconf": self._globalconf(conf, now),
            "log_size": s.log.size,
            "messagelog": self._log(),
            "ocsp": self._ocsp(conf, now),
            "certificate_warnings": s.expiring_certificates(),
            "timestamping": s.stamper.health(),
            "catalogue": s.declarer.health(),
            "provider_port": {
                "connections": len(s.provider_connections),
                **s.handshakes.counts(),
            },
            **({"consumer_https_port": s.consumer_handshakes.counts()} if s.consumer_https else {}),
            **({"archiving": dict(s.archiving)} if s.config.retention.days is not None else {}),
            **({"policy": s.policy.health()} if s.policy is not None else {}),
        }

    def health_report(self) -> tuple[int, dict[str, Any]]:
        """``/health`` of the status listener: 200 or 503, and :meth:`health`."""
        body = self.health()
        return (503 if body["reasons"] else 200), body

    def verdict(self) -> Verdict:
        """Whether the server can serve now (``/health`` of the consumer port shows only this)."""
        return judge(self.facts(self._server.clock()))

    def facts(self, now: float) -> HealthFacts:
        """What :func:`~exchange.server.health.judge` needs, at ``now``."""
        s = self._server
        conf = s.in_force
        maintenance = s.maintenance.current
        failure = s.log.write_failure
        policy = s.policy.health() if s.policy is not None else None
        poller = s.poller
        pending = poller.pending if poller is not None else None
        return HealthFacts(
            now=now,
            maintenance=maintenance is not None,
            maintenance_reason=maintenance.reason if maintenance is not None else None,
            stopping=s.stopping,
            globalconf_version=conf.version if conf else None,
            globalconf_expires_at=conf.expires_at if conf else None,
            certificates=self._own_certificates(conf),
            timestamping_refusal=s.stamper.refusal(),
            log_write_failure=None if failure is None else failure.reason,
            unusable_keys=self._probe.unusable(s.signers, now),
            policy_version=policy["version"] if policy else None,
            policy_reload_error=policy["last_reload_error"] if policy else None,
            expiry_warnings=tuple(s.expiring_certificates()),
            globalconf_pending=(
                None
                if pending is None
                else f"global configuration version {pending.version} is not in force yet: "
                f"{pending.reason}"
            ),
            globalconf_persisted_refused=poller.persisted_refused if poller is not None else None,
            globalconf_last_refusal=poller.last_refusal if poller is not None else None,
            globalconf_fetch_error=poller.last_fetch_error if poller is not None else None,
        )

    def metrics_snapshot(self) -> StateSnapshot:
        """The state ``/metrics`` exports beside the per-exchange counts."""
        s = self._server
        conf = s.in_force
        now = s.clock()
        head = s.log.latest_tree_head()
        poller = s.poller
        connections: dict[tuple[str, str], int] = {}
        for conn in s.provider_connections:
            if conn.peer_id is not None and conn.open:
                key = (str(conn.peer_id), "inbound")
                connections[key] = connections.get(key, 0) + 1
        for server_id, pool in s.pools.items():
            count = sum(1 for c in pool.connections if c is not None and c.usable)
            connections[(str(server_id), "outbound")] = count
        return StateSnapshot(
            now=now,
            healthy=not judge(self.facts(now)).reasons,
            maintenance=s.maintenance.current is not None,
            globalconf_version=conf.version if conf else None,
            globalconf_generated_at=conf.generated_at if conf else None,
            globalconf_expires_at=conf.expires_at if conf else None,
            globalconf_last_fetch=poller.last_fetch if poller is not None else None,
            certificates=[self._certificate_state(cert) for cert in s.own_certs],
            log_records=s.log.size,
            log_signed_size=head.size if head else 0,
            log_timestamped_size=s.log.latest_timestamped_size() or 0,
            last_timestamp_success=s.stamper.last_success,
            disk_free_bytes=_disk_free(s.config.log_path),
            connections=connections,
        )

    def _usage(self, cert: x509.Certificate) -> Literal["auth", "sign"]:
        return "auth" if cert is self._server.auth_cert else "sign"

    def _own_certificates(self, conf: GlobalConf | None) -> list[OwnCertificate]:
        revocation = self._server.revocation
        out = []
        for cert in self._server.own_certs:
            out.append(
                OwnCertificate(
                    subject=cert.subject.rfc4514_string(),
                    usage=self._usage(cert),
                    not_before=cert.not_valid_before_utc.timestamp(),
                    not_after=cert.not_valid_after_utc.timestamp(),
                    ocsp_needed=conf is not None
                    and revocation.responder_of(cert, conf) is not None,
                    ocsp_held=revocation.own.held(cert) is not None,
                    ocsp_fresh=conf is not None and revocation.own_response(cert, conf) is not None,
                )
            )
        return out

    def _globalconf(self, conf: GlobalConf | None, now: float) -> dict[str, Any]:
        poller = self._server.poller
        fetched = poller.last_fetch if poller is not None else None
        return {
            "version": conf.version if conf else None,
            "generated_at": iso_seconds(conf.generated_at) if conf else None,
            "expires_at": iso_seconds(conf.expires_at) if conf else None,
            "expires_in_seconds": int(conf.expires_at - now) if conf else None,
            "last_fetch": iso_seconds(fetched) if fetched is not None else None,
            "last_fetch_error": poller.last_fetch_error if poller is not None else None,
            # the last configuration downloaded and refused, and why, until one is taken
            "last_refusal": poller.last_refusal if poller is not None else None,
        }

    def _log(self) -> dict[str, Any]:
        log = self._server.log
        head = log.latest_tree_head()
        failure = log.write_failure
        size = log.size
        return {
            "records": size,
            "unsigned_records": size - (head.size if head else 0),
            "untimestamped_records": size - (log.latest_timestamped_size() or 0),
            "writable": failure is None,
            "last_write_failure": (
                None
                if failure is None
                else {"at": iso_seconds(failure.at), "reason": failure.reason}
            ),
            "disk_free_bytes": _disk_free(self._server.config.log_path),
        }

    def _certificate_state(self, cert: x509.Certificate) -> CertificateState:
        held = self._server.revocation.own.held(cert)
        return CertificateState(
            subject=cert.subject.rfc4514_string(),
            usage=self._usage(cert),
            not_after=cert.not_valid_after_utc.timestamp(),
            ocsp_this_update=held.this_update.timestamp() if held else None,
            ocsp_produced_at=held.produced_at.timestamp() if held else None,
        )

    def _peer_staples(self) -> set[str]:
        """Peers' certificates whose stapled OCSP responses this server holds verified."""
        s = self._server
        peers = [c.peer for c in s.provider_connections]
        peers += [c.peer for p in s.pools.values() for c in p.connections if c is not None]
        return {
            cert_thumbprint(cert)
            for peer in peers
            if peer is not None
            for cert, response in peer.evidence()
            if response is not None
        }

    def _ocsp(self, conf: GlobalConf | None, now: float) -> dict[str, Any]:
        """How many own certificates hold a fresh OCSP response, and per own certificate the
        response held (produced, this and next update, age); peers' responses verified."""
        s = self._server
        revocation = s.revocation
        fresh = len(revocation.own_staples(s.own_certs, conf)) if conf else 0
        own = []
        for cert in s.own_certs:
            held = revocation.own.held(cert)
            own.append(
                {
                    "certificate": cert.subject.rfc4514_string(),
                    "usage": self._usage(cert),
                    "needed": conf is not None and revocation.responder_of(cert, conf) is not None,
                    "fresh": conf is not None and revocation.own_response(cert, conf) is not None,
                    "produced_at": held.produced_at.isoformat() if held else None,
                    "this_update": held.this_update.isoformat() if held else None,
                    "next_update": (
                        held.next_update.isoformat() if held and held.next_update else None
                    ),
                    "age_seconds": int(now - held.this_update.timestamp()) if held else None,
                }
            )
        return {
            "own_fresh": fresh,
            "own_total": len(s.own_certs),
            "peers_verified": len(self._peer_staples()),
            "own": own,
        }


def _disk_free(path: Path) -> int | None:
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize
