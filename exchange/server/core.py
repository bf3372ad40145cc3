"""The security server process: state, start-up, shutdown.

One :class:`SecurityServer` owns one trusted global configuration, the member signing keys,
the authentication key, the message log, the policy store and the peer connection pools, and
serves the consumer port (aiohttp, X-Road REST r1) and the provider port (EXM/1 over mutual TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from cryptography import x509

from exchange.errors import (
    ConfigurationError,
    ConsumerLogFailed,
    ConsumerTimestampingFailed,
    ExchangeError,
    GlobalConfError,
    OutdatedGlobalConf,
    ProviderLogFailed,
    ProviderOutdatedGlobalConf,
    ProviderTimestampingFailed,
)
from exchange.globalconf.anchor import Anchor
from exchange.globalconf.client import GlobalConfPoller
from exchange.globalconf.document import GlobalConf, SecurityServerInfo
from exchange.globalconf.verifier import TrustedGlobalConf
from exchange.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from exchange.messagelog.archive import (
    ArchiveIndexEntry,
    ArchivingBusy,
    archive_log,
    archived_end,
)
from exchange.messagelog.store import MessageLog, open_readonly
from exchange.messagelog.timestamping import TreeHeadStamper
from exchange.policy.loader import PolicyStore
from exchange.policy.model import PolicySet
from exchange.protocol.hello import hello_meta
from exchange.protocol.jws import Signer, cert_thumbprint
from exchange.protocol.rest import MAX_URI_LENGTH
from exchange.server import tls
from exchange.server.backend import Backend
from exchange.server.config import (
    EXPIRY_WARNING_DAYS,
    ClientConfig,
    ServerConfig,
    ServiceConfig,
)
from exchange.server.consumer import consumer_handler
from exchange.server.declare import ServiceDeclarer
from exchange.server.handshakes import HandshakeLimits, TlsPort
from exchange.server.metadata import MetadataServices
from exchange.server.peer import PeerPool
from exchange.server.provider import PeerLoad, ProviderConnection
from exchange.server.quota_store import PersistentQuota
from exchange.server.records import ExchangeRecord
from exchange.server.replay import ReplayCache
from exchange.server.revocation import RevocationChecks
from exchange.server.soap_provider import LocalSoapService
from exchange.trust.keys import fingerprint, load_certificate, load_certificates, load_private_key
from exchange.trustcore.peers import AdmittedPeer, PeerTrust

log = logging.getLogger("exchange.server")


def passphrase_from_env(config: ServerConfig) -> bytes | None:
    value = os.environ.get(config.passphrase_env)
    return value.encode() if value else None


class SecurityServer:
    def __init__(
        self,
        config: ServerConfig,
        *,
        passphrase: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.passphrase = passphrase
        self.anchor = Anchor.load(config.anchor)
        self.trusted = TrustedGlobalConf(self.anchor, now=int(clock()))
        self.all_signers = self._load_signers(config)
        self.signers = _active(self.all_signers)
        self.owner_signer = self.signers.get(config.owner) or next(iter(self.signers.values()))
        self.auth_cert = self._auth_cert(config)
        self.clients: dict[SubsystemId, ClientConfig] = {c.id: c for c in config.clients}
        self.services: dict[ServiceId, ServiceConfig] = {s.id: s for s in config.services}
        # SOAP services this server answers itself, by service code (the metadata services)
        self.local_soap_services: dict[str, LocalSoapService] = {}
        self._is_fps = {
            c.id: frozenset(fingerprint(x) for p in c.is_certs for x in load_certificates(p))
            for c in config.clients
        }
        self.replay = ReplayCache(config.limits.clock_skew_seconds)
        self.quota = PersistentQuota(config.state_dir / "quota.sqlite", clock)
        self.policy = self._open_policy(config)
        self.backend = Backend(
            max_response_bytes=config.limits.max_response_bytes,
            connect_timeout=config.limits.connect_timeout,
        )
        self.log = MessageLog(config.log_path, self.owner_signer, owner=config.server_id, now=clock)
        self.metadata = MetadataServices(self)
        self.declarer = ServiceDeclarer(self)
        self.stamper = TreeHeadStamper(
            self.log,
            lambda: self.in_force,
            clock=clock,
            failure_limit=config.timestamping_failure_limit,
        )
        self.pools: dict[SecurityServerId, PeerPool] = {}
        self.provider_connections: set[ProviderConnection] = set()
        # what each peer server has in flight at the provider port, over all its connections
        self.peer_loads: dict[SecurityServerId, PeerLoad] = {}
        self.handshakes = HandshakeLimits(
            "provider port",
            config.limits.max_pending_handshakes,
            config.limits.tls_handshake_timeout,
        )
        self.consumer_handshakes = HandshakeLimits(
            "consumer HTTPS port",
            config.limits.max_pending_handshakes,
            config.limits.tls_handshake_timeout,
        )
        self.revocation = RevocationChecks(clock)
        self.in_force: GlobalConf | None = None
        """The global configuration in force: everything below has moved to it (the trusted
        state may already hold a newer one that could not be put in force yet)."""
        self.peer_trust: PeerTrust | None = None
        """Peer trust under the global configuration in force (None before the first)."""
        self.own_certs = [self.auth_cert, *(s.cert for _, s in self.all_signers)]
        self.response_timeout = config.limits.backend_timeout + 5.0
        self._turn = 0
        self._client_ctx: ssl.SSLContext | None = None
        self._ca_fps: tuple[str, ...] = ()
        self._runner: web.ServerRunner | None = None
        self._sites: list[web.TCPSite] = []
        self._provider_server: TlsPort | None = None
        self._consumer_tls: TlsPort | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.archiving: dict[str, Any] = {"last_run": None, "last_error": None, "archived": 0}
        self.poller: GlobalConfPoller | None = None
        self.consumer_port = 0
        self.consumer_tls_port = 0
        self.provider_port = 0

    # -- keys -----------------------------------------------------------------------------------

    def _auth_cert(self, config: ServerConfig) -> x509.Certificate:
        """The authentication certificate, checked to be the auth key's (a bad key, passphrase
        or pairing fails at start, not at the first TLS handshake)."""
        cert = load_certificate(config.auth_cert)
        if load_private_key(config.auth_key, self.passphrase).public_key() != cert.public_key():
            raise ConfigurationError(
                f"{config.auth_cert} is not the certificate of {config.auth_key}"
            )
        return cert

    def _load_signers(self, config: ServerConfig) -> list[tuple[MemberId, Signer]]:
        signers = []
        for item in config.signing:
            key = load_private_key(item.key, self.passphrase)
            cert = load_certificate(item.cert)
            if cert.public_key() != key.public_key():
                raise ConfigurationError(f"{item.cert} is not the certificate of {item.key}")
            signers.append((item.member, Signer(key, cert)))
        if not signers:
            raise ConfigurationError("no member signing key configured")
        return signers

    def _open_policy(self, config: ServerConfig) -> PolicyStore | None:
        """The provider's policy, with every change (and refused change) recorded in a signed,
        hash-chained audit trail (who, when, the diff)."""
        if config.policy_dir is None:
            return None
        from exchange.policy.audit import (
            TRAIL_FILE,
            PolicyAuditTrail,
            record_reload,
            record_startup,
        )

        trail = PolicyAuditTrail(config.state_dir / TRAIL_FILE, self.owner_signer)
        store = PolicyStore(
            config.policy_dir,
            provider=config.owner,
            on_reload=functools.partial(record_reload, trail),
        )
        record_startup(trail, store.files, store.current)
        return store

    def hello_meta(self) -> dict[str, Any]:
        """HELLO: our members' signing certificates and fresh OCSP responses for our own
        certificates (authentication included: Python's ssl cannot staple in the handshake)."""
        conf = self.in_force
        staples = self.revocation.own_staples(self.own_certs, conf) if conf else {}
        certs = [s.cert for _, s in self.all_signers]
        return hello_meta(str(self.config.server_id), certs, staples)

    def keep_evidence(self, peer: AdmittedPeer) -> None:
        """A peer's accepted certificates and their OCSP responses go into the message log, so
        that its signatures verify offline."""
        for cert, response in peer.evidence():
            self.log.register_cert(cert)
            if response is not None:
                self.log.register_ocsp(cert, response)

    async def _refresh_staples(self) -> None:
        """Keep our OCSP responses fresh; re-staple open connections when they change."""
        while True:
            conf = self.in_force
            freshness = conf.settings.ocsp_freshness_seconds if conf else 3600
            await asyncio.sleep(max(1.0, min(60.0, freshness / 8)))
            if conf is None:
                continue
            try:
                changed = await self.revocation.refresh_own(self.own_certs, conf)
            except Exception:
                log.exception("refreshing OCSP responses failed")
                continue
            if changed:
                self._restaple()

    async def reload_keys(self) -> None:
        """Key rotation without downtime: re-read the configuration's keys and certificates.

        Every signing certificate listed is presented to peers (so signatures by an old and a new
        key both verify during the overlap); each member signs with its newest. A new
        authentication certificate serves new connections at once; this server's own outgoing
        connections move to it as their requests drain. Open connections are re-stapled.
        """
        from exchange.server.config import load_server_config

        config = load_server_config(self.config.path)
        all_signers = self._load_signers(config)
        auth_cert = self._auth_cert(config)
        own_certs = [auth_cert, *(s.cert for _, s in all_signers)]
        conf = self.in_force
        # (1) OCSP responses for new certificates first, so peers accept them from the start;
        # a certificate that needs one and has none is not activated
        if conf is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(15):
                    await self.revocation.refresh_own(own_certs, conf)
            missing = self.revocation.missing_staples(own_certs, conf)
            if missing:
                raise ConfigurationError(
                    f"no fresh OCSP response for {len(missing)} certificate(s) "
                    f"({', '.join(missing)}); the current keys stay in force"
                )
        # (2) then activate, with no await until the HELLO presenting the new certificates is
        # queued: frames on one connection keep their order, so no request signed with a new
        # key reaches a peer before it
        auth_changed = auth_cert != self.auth_cert
        self.config = config
        self.all_signers = all_signers
        self.signers = _active(all_signers)
        self.owner_signer = self.signers.get(config.owner) or next(iter(self.signers.values()))
        for _, signer in all_signers:
            self.log.register_cert(signer.cert)
        self.log.set_signer(self.owner_signer)
        self.auth_cert = auth_cert
        self.own_certs = own_certs
        if auth_changed:
            self._rotate_auth(conf)
        self._restaple()
        self.declarer.start()
        log.info(
            "keys reloaded: %d signing certificate(s), auth %s",
            len(self.all_signers),
            fingerprint(auth_cert),
        )

    def _rotate_auth(self, conf: GlobalConf | None) -> None:
        cfg = self.config
        cas = conf.ca_certs() if conf is not None else []
        if self._provider_server is not None:
            self._provider_server.context = self._provider_context(cas)
        self._client_ctx = tls.peer_client_context(
            cfg.auth_cert, cfg.auth_key, self.passphrase, cas
        )
        old, self.pools = self.pools, {}
        for pool in old.values():
            pool.drain()
        if self._consumer_tls is not None:  # information systems' new connections get it too
            self._consumer_tls.context = self._consumer_https_context()

    def expiring_certificates(self, within_days: int = EXPIRY_WARNING_DAYS) -> list[str]:
        """Operator warnings for own certificates that expire within ``within_days``."""
        now = self.clock()
        warnings = []
        for cert in self.own_certs:
            left = cert.not_valid_after_utc.timestamp() - now
            if left < within_days * 86400:
                what = "authentication" if cert is self.auth_cert else "signing"
                warnings.append(
                    f"{what} certificate {cert.subject.rfc4514_string()} expires "
                    f"{cert.not_valid_after_utc.isoformat()} (in {max(0, int(left // 86400))} "
                    "days): issue and activate a new one"
                )
        return warnings

    async def _watch_expiry(self) -> None:
        """Warn in the log ahead of certificate expiry: at start, then daily."""
        while True:
            for warning in self.expiring_certificates():
                log.warning("%s", warning)
            await asyncio.sleep(86400)

    def _restaple(self) -> None:
        hello = self.hello_meta()
        for pool in self.pools.values():
            pool.send_hello(hello)
        for conn in list(self.provider_connections):
            conn.send_hello(hello)

    def signer_for(self, member: MemberId | None, *, consumer: bool = False) -> Signer:
        if member is not None:
            signer = self.signers.get(member)
            if signer is not None:
                return signer
            if consumer:
                raise ConfigurationError(
                    f"this security server holds no signing key for member {member}",
                    code="Server.ClientProxy.CannotCreateSignature",
                )
        return self.owner_signer

    def is_cert_fps(self, client: SubsystemId) -> frozenset[str]:
        return self._is_fps.get(client, frozenset())

    # -- global configuration -------------------------------------------------------------------

    def globalconf_or_fail(self, *, provider: bool, now: float | None = None) -> GlobalConf:
        """The configuration in force, checked before every exchange; this also refuses the
        exchange while tree heads have gone un-time-stamped past the limit (docs/design.md §8)."""
        refusal = self.stamper.refusal()
        if refusal is not None:
            raise (
                ProviderTimestampingFailed(refusal)
                if provider
                else ConsumerTimestampingFailed(refusal)
            )
        conf = self.in_force
        if conf is None:
            err = "no valid global configuration has been received yet"
            raise ProviderOutdatedGlobalConf(err) if provider else OutdatedGlobalConf(err)
        now = int(self.clock() if now is None else now)
        if conf.is_expired(now):
            err = f"global configuration version {conf.version} expired at {conf.expires_at}"
            internal = (
                f"the configuration in force expired {now - conf.expires_at} s ago; check that "
                "the central server is reachable (and /health for a version not put in force)"
            )
            cls = ProviderOutdatedGlobalConf if provider else OutdatedGlobalConf
            raise cls(err, internal=internal)
        return conf

    def _on_globalconf(self, conf: GlobalConf) -> None:
        """Put ``conf`` in force (the poller's ``on_change``): everything that depends on it is
        built first, and only if all of it builds is it swapped in, so that a failure leaves the
        configuration in force as it was (the poller retries on its next poll). Then every open
        connection, inbound and outbound, is judged again by the new peer trust."""
        held = self.in_force
        if held is not None and conf.version == held.version and conf.same_content(held):
            self.in_force = conf  # a refresh: the same content, a later expiry
            return
        # (1) build: TLS contexts when the approved CAs changed, the peer trust
        cas = conf.ca_certs()
        fps = tuple(fingerprint(c) for c in cas)
        contexts = None
        if fps != self._ca_fps:
            cfg = self.config
            client = tls.peer_client_context(cfg.auth_cert, cfg.auth_key, self.passphrase, cas)
            # a new provider context, not load_verify_locations on the old one: OpenSSL cannot
            # unload a CA, and a removed CA's certificates must fail the handshake itself
            contexts = (client, self._provider_context(cas))
        trust = PeerTrust(conf)
        # (2) swap in, with nothing left that can fail
        if contexts is not None:
            self._ca_fps = fps
            self._client_ctx = contexts[0]
            if self._provider_server is not None:
                self._provider_server.context = contexts[1]
            self._close_pools()
        self.peer_trust, self.in_force = trust, conf
        log.info("global configuration version %s in force", conf.version)
        # (3) open connections judged again under it
        now = self.clock()
        for server_id, pool in list(self.pools.items()):
            info = conf.server(server_id)
            if info is None or info.address != pool.address or not pool.recheck(trust, now):
                pool.close()
                del self.pools[server_id]
        for conn in list(self.provider_connections):
            conn.recheck(trust, now)

    def pool_for(self, info: SecurityServerInfo) -> PeerPool:
        pool = self.pools.get(info.id)
        if pool is None:
            if self._client_ctx is None:
                raise OutdatedGlobalConf("no TLS context yet: no global configuration received")
            pool = PeerPool(
                info.id,
                info.address,
                ssl_context=self._client_ctx,
                hello=self.hello_meta,
                trust=lambda: self.peer_trust,
                keep=self.keep_evidence,
                size=self.config.limits.peer_connections,
                connect_timeout=self.config.limits.connect_timeout,
                max_frame=self.config.limits.max_response_bytes,
                clock=self.clock,
            )
            self.pools[info.id] = pool
        return pool

    def _close_pools(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()

    def next_index(self, n: int) -> int:
        self._turn = (self._turn + 1) % 1_000_000
        return self._turn % n

    # -- policy and log -------------------------------------------------------------------------

    def policy_set(self) -> PolicySet:
        if self.policy is None:
            return PolicySet(self.config.owner, (), "no-policy")
        return self.policy.current

    async def log_record(self, rec: ExchangeRecord) -> None:
        """Append durably; an exchange whose record cannot be written fails (log before answer)."""
        try:
            await self.log.append(rec.to_entry(with_bodies=self.config.log_bodies), typed=True)
        except ExchangeError as exc:
            log.error("message log write failed: %s", exc.internal)
            cls = ConsumerLogFailed if rec.side == "consumer" else ProviderLogFailed
            raise cls("the exchange could not be logged, so it was not answered") from None

    async def _archive_on_interval(self) -> None:
        """Retention: every ``archive_interval`` seconds, move the records older than
        ``retention_days`` (and covered by a time-stamped tree head) to archive files."""
        while True:
            await asyncio.sleep(self.config.retention.interval)
            await self.archive_now()

    async def archive_now(self) -> list[ArchiveIndexEntry]:
        """One archiving run, in a thread (reading, zipping and signing never block the loop).

        Failures are logged, never raised: the log stays as it was and the next run retries.
        """
        retention = self.config.retention
        days = retention.days if retention.days is not None else 0.0
        cutoff_ms = int((self.clock() - days * 86400) * 1000)
        try:
            written = await asyncio.to_thread(
                archive_log,
                self.config.log_path,
                retention.archive_dir,
                self.owner_signer,
                older_than_ms=cutoff_ms,
                max_records=retention.max_records,
                now=self.clock,
            )
        except ArchivingBusy:
            log.info("an operator's archiving run is in progress; archiving on the next interval")
            return []
        except (ExchangeError, OSError) as exc:
            log.error("archiving the message log failed (will retry): %s", exc)
            self.archiving["last_error"] = str(exc)
            return []
        self.archiving["last_run"] = dt.datetime.fromtimestamp(self.clock(), dt.UTC).isoformat()
        self.archiving["last_error"] = None
        self.archiving["archived"] = await asyncio.to_thread(archived_end, self.config.log_path)
        for entry in written:
            log.info(
                "archived message log records %d..%d to %s",
                entry.first_seq,
                entry.end_seq - 1,
                retention.archive_dir / entry.file,
            )
        return written

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        await self._start_globalconf()
        # the log's latest tree head must be this server's, signed by a key it holds or an
        # earlier one of its owner that an approved CA issued (rotation)
        conf = self.in_force or self.trusted.current
        self.log.open(trusted_cas=conf.ca_certs() if conf is not None else ())
        self.revocation.keep = self.log.register_ocsp
        if not cfg.log_bodies:
            log.warning(
                "metadata-only logging ([messagelog] bodies = false): records keep signatures and "
                "body digests, but not what was sent and answered; the log cannot show them later"
            )
        for _, signer in self.all_signers:
            self.log.register_cert(signer.cert)
        self._seed_replay_cache()
        self.quota.start()
        self.stamper.last_success = self.clock()
        self._tasks.append(asyncio.create_task(self.stamper.run()))
        if self.in_force is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(15):
                    await self.revocation.refresh_own(self.own_certs, self.in_force)
        self._tasks.append(asyncio.create_task(self._refresh_staples()))
        self._tasks.append(asyncio.create_task(self._watch_expiry()))
        if cfg.retention.days is not None:
            self._tasks.append(asyncio.create_task(self._archive_on_interval()))
        cas = self.in_force.ca_certs() if self.in_force else []
        self._provider_server = TlsPort(
            self.handshakes, self._provider_context(cas), lambda: ProviderConnection(self)
        )
        self.provider_port = await self._provider_server.open(cfg.provider.host, cfg.provider.port)
        await self._start_consumer()
        if self.policy is not None:
            self._tasks.append(asyncio.create_task(self._watch_policy()))
        self.declarer.start()
        log.info(
            "security server %s serving: consumer %s:%s, provider %s:%s",
            cfg.server_id,
            cfg.consumer.host,
            self.consumer_port,
            cfg.provider.host,
            self.provider_port,
        )

    async def _start_globalconf(self) -> None:
        cfg = self.config
        self.poller = GlobalConfPoller(
            self.trusted,
            self.anchor.download_url,
            cfg.globalconf_state,
            interval=self.poll_interval(),
            on_change=self._on_globalconf,
        )
        self.poller.load_persisted()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await self.poller.fetch_once(int(self.clock()))
        if self.in_force is None:  # no download: the persisted configuration, if any
            with contextlib.suppress(GlobalConfError):
                await self.poller.put_in_force()
        if self.in_force is None:
            self._client_ctx = tls.peer_client_context(
                cfg.auth_cert, cfg.auth_key, self.passphrase, []
            )
            log.error(
                "no global configuration yet; "
                "exchanges fail with OutdatedGlobalConf until one arrives"
            )
        self._tasks.append(asyncio.create_task(self.poller.run()))

    def poll_interval(self) -> float:
        conf = self.in_force or self.trusted.current
        return float(conf.settings.globalconf_poll_seconds) if conf else 60.0

    async def _start_consumer(self) -> None:
        cfg = self.config
        # aiohttp refuses request lines over 8190 bytes with a bare 400 before our handler runs;
        # with room above MAX_URI_LENGTH, a long URI gets its X-Road error (414) and is logged.
        http = web.Server(consumer_handler(self), access_log=None, max_line_size=4 * MAX_URI_LENGTH)
        self._runner = web.ServerRunner(http, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.consumer.host, cfg.consumer.port, backlog=1024)
        await site.start()
        self._sites.append(site)
        self.consumer_port = _bound_port(site)
        if cfg.consumer_tls is not None:
            # aiohttp's server is the protocol factory; the handshakes are bounded as at the
            # provider port (handshakes.py)
            ctx = self._consumer_https_context()
            self._consumer_tls = TlsPort(self.consumer_handshakes, ctx, http)
            host, port = cfg.consumer_tls.host, cfg.consumer_tls.port
            self.consumer_tls_port = await self._consumer_tls.open(host, port)

    def _provider_context(self, cas: list[x509.Certificate]) -> ssl.SSLContext:
        """The provider port's TLS context: this server's authentication certificate, and the
        approved CAs ``cas`` for its peers' certificates."""
        cfg = self.config
        return tls.provider_context(cfg.auth_cert, cfg.auth_key, self.passphrase, cas)

    def _consumer_https_context(self) -> ssl.SSLContext:
        """The consumer port's HTTPS listener: this server's authentication certificate, and the
        information systems' certificates registered for its clients."""
        cfg = self.config
        is_certs = [x for c in cfg.clients for p in c.is_certs for x in load_certificates(p)]
        return tls.consumer_https_context(cfg.auth_cert, cfg.auth_key, self.passphrase, is_certs)

    def _seed_replay_cache(self) -> None:
        horizon_ms = int((self.clock() - 2 * self.config.limits.clock_skew_seconds) * 1000)
        conn = open_readonly(self.config.log_path)
        try:
            rows = conn.execute(
                "SELECT client, message_id, logged_at FROM records "
                "WHERE side = 'provider' AND logged_at >= ? AND client IS NOT NULL "
                "AND message_id IS NOT NULL ORDER BY seq",
                (horizon_ms,),
            ).fetchall()
        finally:
            conn.close()
        for client, message_id, logged_at in rows:
            self.replay.seed(client, message_id, logged_at)

    async def _watch_policy(self) -> None:
        assert self.policy is not None
        while True:
            await asyncio.sleep(1.0)
            try:
                # reading files, signing and writing the audit trail: off the event loop
                await asyncio.to_thread(self.policy.maybe_reload)
            except Exception as exc:
                # whatever a reload raises, the policy in force stays and the watch goes on
                # (PolicyStore logged it and keeps it for /health)
                log.error("policy reload refused, previous policy stays in force: %s", exc)

    async def stop(self) -> None:
        await self.declarer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._provider_server is not None:
            self._provider_server.close()
        for conn in list(self.provider_connections):
            if conn.transport is not None:
                conn.transport.close()
        if self._consumer_tls is not None:
            self._consumer_tls.close()  # no new connections; the runner closes the open ones
        if self._runner is not None:
            await self._runner.cleanup()
        self._close_pools()
        await self.backend.close()
        await self.metadata.close()
        await self.revocation.close()
        await self.quota.stop()
        if self.poller is not None:
            await self.poller.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                await self.stamper.stamp_now(timeout=5)
        self.log.close()

    def health(self) -> dict[str, Any]:
        conf = self.in_force
        now = int(self.clock())
        pending = self.poller.pending if self.poller is not None else None
        return {
            "server": str(self.config.server_id),
            "globalconf_version": conf.version if conf else None,
            "globalconf_fresh": bool(conf and not conf.is_expired(now)),
            # a verified version that could not be put in force yet, and why
            "globalconf_pending": None if pending is None else dataclasses.asdict(pending),
            "log_size": self.log.size,
            "ocsp": self._ocsp_health(conf),
            "certificate_warnings": self.expiring_certificates(),
            "timestamping": self.stamper.health(),
            "catalogue": self.declarer.health(),
            "provider_port": {
                "connections": len(self.provider_connections),
                **self.handshakes.counts(),
            },
            **(
                {"consumer_https_port": self.consumer_handshakes.counts()}
                if self._consumer_tls is not None
                else {}
            ),
            **({"archiving": self.archiving} if self.config.retention.days is not None else {}),
            **({"policy": self.policy.health()} if self.policy is not None else {}),
        }

    def _peer_staples(self) -> set[str]:
        """Peers' certificates whose stapled OCSP responses this server holds verified."""
        peers = [c.peer for c in self.provider_connections]
        peers += [c.peer for p in self.pools.values() for c in p.connections if c is not None]
        return {
            cert_thumbprint(cert)
            for peer in peers
            if peer is not None
            for cert, response in peer.evidence()
            if response is not None
        }

    def _ocsp_health(self, conf: GlobalConf | None) -> dict[str, int]:
        """How many own certificates hold a fresh OCSP response; peers' responses verified."""
        own = len(self.revocation.own_staples(self.own_certs, conf)) if conf else 0
        return {
            "own_fresh": own,
            "own_total": len(self.own_certs),
            "peers_verified": len(self._peer_staples()),
        }


def _active(signers: list[tuple[MemberId, Signer]]) -> dict[MemberId, Signer]:
    """Each member signs with its newest certificate (the last activated)."""
    active: dict[MemberId, Signer] = {}
    for member, signer in signers:
        held = active.get(member)
        if held is None or signer.cert.not_valid_before_utc >= held.cert.not_valid_before_utc:
            active[member] = signer
    return active


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the (asyncio or uvloop) server here
    sockets = getattr(server, "sockets", None)
    if not sockets:
        raise RuntimeError(f"site {site.name} is not listening")
    return int(sockets[0].getsockname()[1])


async def run_server(
    config: ServerConfig,
    *,
    passphrase: bytes | None = None,
    ready: Callable[[SecurityServer], None] | None = None,
) -> None:
    """Run until cancelled (SIGINT/SIGTERM in the CLI)."""
    server = SecurityServer(config, passphrase=passphrase)
    await server.start()
    try:
        if ready is not None:
            ready(server)
        await asyncio.Event().wait()
    finally:
        await server.stop()
