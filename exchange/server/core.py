"""The security server process: state, start-up, shutdown.

One :class:`SecurityServer` owns one trusted global configuration, the member signing keys,
the authentication key, the message log, the policy store and the peer connection pools, and
serves the consumer port (aiohttp, X-Road REST r1) and the provider port (EXM/1 over mutual TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from exchange.identifiers import (
    MemberId,
    SecurityServerId,
    ServiceId,
    SubsystemId,
    parse_subsystem,
)
from exchange.messagelog.store import MessageLog, open_readonly, read_ocsp_responses
from exchange.messagelog.timestamping import TreeHeadStamper
from exchange.policy.loader import PolicyStore
from exchange.policy.model import PolicySet
from exchange.protocol.hello import hello_meta
from exchange.protocol.jws import Signer, cert_thumbprint
from exchange.protocol.rest import MAX_URI_LENGTH
from exchange.server import tls
from exchange.server.archiving import LogArchiver
from exchange.server.backend import Backend
from exchange.server.config import (
    EXPIRY_WARNING_DAYS,
    ClientConfig,
    ServerConfig,
    ServiceConfig,
)
from exchange.server.consumer import ConsumerHttpServer, consumer_handler
from exchange.server.declare import ServiceDeclarer
from exchange.server.handshakes import HandshakeLimits, TlsPort
from exchange.server.health import Verdict
from exchange.server.maintenance import MaintenanceWatch
from exchange.server.metadata import MetadataServices
from exchange.server.metrics import ServerMetrics
from exchange.server.ownkeys import (
    active,
    expiry_warnings,
    load_auth_cert,
    load_signers,
    owner_signer,
)
from exchange.server.peer import PeerPool
from exchange.server.provider import PeerLoad, ProviderConnection, close_stalled
from exchange.server.quota_store import PersistentQuota
from exchange.server.records import ExchangeRecord
from exchange.server.reload import changes, needs_restart
from exchange.server.replay import ReplayCache
from exchange.server.revocation import RevocationChecks
from exchange.server.selfreport import SelfReport
from exchange.server.soap_provider import LocalSoapService
from exchange.server.statusport import create_status_app
from exchange.trust.keys import fingerprint, load_certificates
from exchange.trustcore.peers import AdmittedPeer, PeerTrust

log = logging.getLogger("exchange.server")

MAX_KNOWN = 10_000
"""Client and service names remembered as known (or not) for the metrics' labels."""


@dataclass(frozen=True, slots=True)
class _NewKeys:
    """Keys and certificates read from a configuration and ready to be put in force."""

    all_signers: list[tuple[MemberId, Signer]]
    auth_cert: x509.Certificate
    own_certs: list[x509.Certificate]


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
        self.all_signers = load_signers(config, passphrase)
        self.signers = active(self.all_signers)
        self.owner_signer = owner_signer(config, self.signers)
        self.auth_cert = load_auth_cert(config, passphrase)
        self.clients: dict[SubsystemId, ClientConfig] = {c.id: c for c in config.clients}
        self.services: dict[ServiceId, ServiceConfig] = {s.id: s for s in config.services}
        self._service_names = frozenset(str(s) for s in self.services)
        # SOAP services this server answers itself, by service code (the metadata services)
        self.local_soap_services: dict[str, LocalSoapService] = {}
        self._is_fps = _is_fingerprints(config)
        self.replay = ReplayCache(config.limits.clock_skew_seconds)
        self.quota = PersistentQuota(config.state_dir / "quota.sqlite", clock)
        self.policy = self._open_policy(config)
        self.backend = Backend(
            max_response_bytes=config.limits.max_response_bytes,
            connect_timeout=config.limits.connect_timeout,
        )
        self.report = SelfReport(self)
        self.metrics = ServerMetrics(self.report.metrics_snapshot)
        self.log = MessageLog(
            config.log_path,
            self.owner_signer,
            owner=config.server_id,
            now=clock,
            on_commit=self.metrics.commit,
        )
        self.maintenance = MaintenanceWatch(config.state_dir)
        self.stopping = False
        """SIGTERM: no new connections or exchanges are taken; those in flight finish."""
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
        self.response_timeout = config.limits.backend_timeout + 5.0
        """How long the consumer waits for a provider's answer: the backend's time and more."""
        self.in_force: GlobalConf | None = None
        """The global configuration in force: everything below has moved to it (the trusted
        state may already hold a newer one that could not be put in force yet)."""
        self.peer_trust: PeerTrust | None = None
        """Peer trust under the global configuration in force (None before the first)."""
        self.own_certs = [self.auth_cert, *(s.cert for _, s in self.all_signers)]
        self._turn = 0
        self._client_ctx: ssl.SSLContext | None = None
        self._ca_fps: tuple[str, ...] = ()
        self._runner: web.ServerRunner | None = None
        self._status_runner: web.AppRunner | None = None
        self._known: tuple[GlobalConf | None, dict[str, bool]] = (None, {})
        self._sites: list[web.TCPSite] = []
        self._provider_server: TlsPort | None = None
        self._consumer_tls: TlsPort | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.archiver = LogArchiver(lambda: self.config, lambda: self.owner_signer, clock)
        self.poller: GlobalConfPoller | None = None
        self.consumer_port = 0
        self.consumer_tls_port = 0
        self.provider_port = 0
        self.status_port = 0

    # -- keys -----------------------------------------------------------------------------------

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
        """Keep our OCSP responses fresh; re-staple open connections when they change. While
        one is missing, retry within seconds (RevocationChecks.next_refresh)."""
        while True:
            conf = self.in_force
            delay = self.revocation.next_refresh(self.own_certs, conf) if conf else 1.0
            await asyncio.sleep(delay)
            conf = self.in_force
            if conf is None:
                continue
            try:
                changed = await self.revocation.refresh_own(self.own_certs, conf)
            except Exception:
                log.exception("refreshing OCSP responses failed")
                continue
            if changed:
                self._restaple()

    async def reload(self) -> list[str]:
        """``exchange server reload`` (SIGHUP): re-read ``server.toml`` and put what changed in
        force without a restart; returns what changed (see :mod:`exchange.server.reload`).

        Raises :class:`ConfigurationError` with nothing changed when the file is invalid, when
        it changes a setting bound at start (each is named), when the policy files or an
        information system's certificate cannot be read, or when a new certificate has no fresh
        OCSP response."""
        from exchange.server.config import load_server_config

        old = self.config
        new = load_server_config(old.path)
        # (1) settings bound at start: refused as a whole, the configuration in force stays
        blocked = needs_restart(old, new)
        if blocked:
            raise ConfigurationError(
                f"{', '.join(blocked)} cannot change without a restart: restart the server "
                "(nothing was reloaded; the configuration in force stays)"
            )
        # (2) what can fail, before anything changes: the keys and certificates (refused without
        # a fresh OCSP response for a new one), the policy (a new directory's, or the files
        # again), the information systems' certificates
        keys = await self._prepare_keys(new)
        policy = self.policy
        if new.policy_dir != old.policy_dir:
            policy = await asyncio.to_thread(self._open_policy, new)
        elif policy is not None:
            await asyncio.to_thread(policy.reload)
        is_fps = _is_fingerprints(new)
        https = self._consumer_https_context(new) if self._consumer_tls is not None else None
        # (3) all of it, with no await in between
        self._activate_keys(new, keys, https)
        self.clients = {c.id: c for c in new.clients}
        self._is_fps = is_fps
        if https is not None and self._consumer_tls is not None:
            self._consumer_tls.context = https
        self.services = {s.id: s for s in new.services}
        self._service_names = frozenset(str(s) for s in self.services)
        if policy is not None and self.policy is None:
            self._tasks.append(asyncio.create_task(self._watch_policy()))
        self.policy = policy
        self.stamper.failure_limit = new.timestamping_failure_limit
        if new.limits.backend_timeout != old.limits.backend_timeout:
            self.response_timeout = new.limits.backend_timeout + 5.0
        done = changes(old, new)
        log.info("configuration reloaded: %s", "; ".join(done) or "nothing changed")
        return done

    async def reload_keys(self, config: ServerConfig | None = None) -> None:
        """Key rotation without downtime: re-read the configuration's keys and certificates.

        Every signing certificate listed is presented to peers (so signatures by an old and a new
        key both verify during the overlap); each member signs with its newest. A new
        authentication certificate serves new connections at once; this server's own outgoing
        connections move to it as their requests drain. Open connections are re-stapled.
        """
        from exchange.server.config import load_server_config

        if config is None:
            config = load_server_config(self.config.path)
        self._activate_keys(config, await self._prepare_keys(config))

    async def _prepare_keys(self, config: ServerConfig) -> _NewKeys:
        """Step (1) of :meth:`reload_keys`: the keys and certificates ``config`` lists, each key
        checked against its certificate, with a fresh OCSP response for every certificate that
        needs one (else :class:`ConfigurationError`); nothing is changed."""
        all_signers = load_signers(config, self.passphrase)
        auth_cert = load_auth_cert(config, self.passphrase)
        own_certs = [auth_cert, *(s.cert for _, s in all_signers)]
        conf = self.in_force
        # OCSP responses for new certificates first, so peers accept them from the start; a
        # certificate that needs one and has none is not activated
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
        return _NewKeys(all_signers, auth_cert, own_certs)

    def _activate_keys(
        self, config: ServerConfig, keys: _NewKeys, https: ssl.SSLContext | None = None
    ) -> None:
        """Step (2) of :meth:`reload_keys`: put prepared keys in force, synchronously (no await
        until the HELLO presenting the new certificates is queued: frames on one connection keep
        their order, so no request signed with a new key reaches a peer before it). ``https``:
        the consumer port's new HTTPS context, if the caller built it already."""
        auth_changed = keys.auth_cert != self.auth_cert
        self.config = config
        self.all_signers = keys.all_signers
        self.signers = active(keys.all_signers)
        self.owner_signer = owner_signer(config, self.signers)
        for _, signer in keys.all_signers:
            self.log.register_cert(signer.cert)
        self.log.set_signer(self.owner_signer)
        self.auth_cert = keys.auth_cert
        self.own_certs = keys.own_certs
        if auth_changed:
            self._rotate_auth(self.in_force, https)
        self._restaple()
        self.declarer.start()
        log.info(
            "keys reloaded: %d signing certificate(s), auth %s",
            len(self.all_signers),
            fingerprint(keys.auth_cert),
        )

    def _rotate_auth(self, conf: GlobalConf | None, https: ssl.SSLContext | None = None) -> None:
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
            self._consumer_tls.context = https or self._consumer_https_context()

    def expiring_certificates(self, within_days: int = EXPIRY_WARNING_DAYS) -> list[str]:
        """Operator warnings for own certificates that expire within ``within_days``."""
        return expiry_warnings(self.own_certs, self.auth_cert, self.clock(), within_days)

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
        """Append durably; an exchange whose record cannot be written fails (log before answer).
        Either way the exchange is counted once in the metrics, from its record."""
        started = time.perf_counter_ns()
        try:
            await self.log.append(rec.to_entry(with_bodies=self.config.log_bodies), typed=True)
        except ExchangeError as exc:
            log.error("message log write failed: %s", exc.internal)
            cls = ConsumerLogFailed if rec.side == "consumer" else ProviderLogFailed
            self._count(rec, cls.code, started)
            raise cls("the exchange could not be logged, so it was not answered") from None
        self._count(rec, rec.error.code if rec.error is not None else None, started)

    def _count(self, rec: ExchangeRecord, code: str | None, started_ns: int) -> None:
        self.metrics.exchange(
            rec,
            code,
            (time.perf_counter_ns() - started_ns) // 1000,
            client_known=self._client_known,
            service_known=self._service_known,
        )

    def _known_cache(self) -> dict[str, bool]:
        conf, cache = self._known
        if conf is not self.in_force or len(cache) > 4 * MAX_KNOWN:
            cache = {}
            self._known = (self.in_force, cache)
        return cache

    def _client_known(self, client: str) -> bool:
        """A metrics label may name ``client``: the configuration in force registers it."""
        cache = self._known_cache()
        known = cache.get(client)
        if known is None:
            conf = self.in_force
            try:
                subsystem = parse_subsystem(client)
            except ExchangeError:
                known = False
            else:
                known = conf is not None and conf.has_subsystem(subsystem)
            cache[client] = known
        return known

    def _service_known(self, service: str) -> bool:
        """A metrics label may name ``service``: provided here, or its subsystem is registered
        in the configuration in force."""
        if service in self._service_names:
            return True
        subsystem, _, _ = service.rpartition("/")
        return self._client_known(subsystem)

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
            self._seed_own_staples(self.in_force)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(15):
                    await self.revocation.refresh_own(self.own_certs, self.in_force)
        self._tasks.append(asyncio.create_task(self._refresh_staples()))
        self._tasks.append(asyncio.create_task(self._watch_expiry()))
        if cfg.retention.days is not None:
            self._tasks.append(asyncio.create_task(self.archiver.run()))
        cas = self.in_force.ca_certs() if self.in_force else []
        self._provider_server = TlsPort(
            self.handshakes, self._provider_context(cas), lambda: ProviderConnection(self)
        )
        self.provider_port = await self._provider_server.open(cfg.provider.host, cfg.provider.port)
        await self._start_consumer()
        await self._start_status()
        self._tasks.append(asyncio.create_task(self._watch_state()))
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
        http = ConsumerHttpServer(
            consumer_handler(self), access_log=None, max_line_size=4 * MAX_URI_LENGTH
        )
        # on stopping, the consumer port waits this long for the exchanges in flight
        self._runner = web.ServerRunner(
            http, handle_signals=False, shutdown_timeout=cfg.limits.drain_timeout
        )
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

    async def _start_status(self) -> None:
        """The status listener (``/health``, ``/metrics``), when ``[status]`` is enabled."""
        listener = self.config.status
        if listener is None:
            return
        self._status_runner = web.AppRunner(create_status_app(self), access_log=None)
        await self._status_runner.setup()
        site = web.TCPSite(self._status_runner, listener.host, listener.port)
        await site.start()
        self.status_port = _bound_port(site)

    async def _watch_state(self) -> None:
        """Every second: the maintenance state file; peers' frames begun too long ago
        (``frame_timeout``); and, while the message log's last write failed, a probe write, so
        that ``/health`` says 200 again once space is freed even when the load balancer sends
        nothing meanwhile."""
        while True:
            await asyncio.sleep(1.0)
            self.maintenance.check()
            try:
                close_stalled(
                    self.provider_connections, time.monotonic(), self.config.limits.frame_timeout
                )
            except Exception:  # a bug of ours: the rest of this watch goes on
                log.exception("closing peers' stalled frames failed")
            if self.log.write_failure is not None:
                with contextlib.suppress(ExchangeError):
                    if await self.log.probe():
                        log.info("the message log can be written again")

    def _provider_context(self, cas: list[x509.Certificate]) -> ssl.SSLContext:
        """The provider port's TLS context: this server's authentication certificate, and the
        approved CAs ``cas`` for its peers' certificates."""
        cfg = self.config
        return tls.provider_context(cfg.auth_cert, cfg.auth_key, self.passphrase, cas)

    def _consumer_https_context(self, cfg: ServerConfig | None = None) -> ssl.SSLContext:
        """The consumer port's HTTPS listener: this server's authentication certificate, and the
        information systems' certificates registered for its clients."""
        cfg = cfg or self.config
        is_certs = [x for c in cfg.clients for p in c.is_certs for x in load_certificates(p)]
        return tls.consumer_https_context(cfg.auth_cert, cfg.auth_key, self.passphrase, is_certs)

    def _seed_own_staples(self, conf: GlobalConf) -> None:
        """The OCSP responses the log kept for our certificates, still fresh: served with at
        once, whether or not the responder answers now."""
        conn = open_readonly(self.config.log_path)
        try:
            stored = read_ocsp_responses(conn, [cert_thumbprint(c) for c in self.own_certs])
        finally:
            conn.close()
        seeded = self.revocation.seed_own(self.own_certs, conf, stored)
        if seeded:
            log.info("%d own certificate(s) stapled with stored fresh OCSP responses", seeded)

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
        while True:
            await asyncio.sleep(1.0)
            policy = self.policy
            if policy is None:
                return
            try:
                # reading files, signing and writing the audit trail: off the event loop
                await asyncio.to_thread(policy.maybe_reload)
            except Exception as exc:
                # whatever a reload raises, the policy in force stays and the watch goes on
                # (PolicyStore logged it and keeps it for /health)
                log.error("policy reload refused, previous policy stays in force: %s", exc)

    async def drain(self) -> None:
        """Stop taking exchanges and let those in flight finish (SIGTERM), within
        ``[limits] drain_timeout``; :meth:`stop` then closes the rest and signs and stamps the
        last tree head.

        (1) ``/health`` says 503 ``stopping``; (2) the listening sockets close, so no new
        connection is accepted; (3) each peer on an open EXM/1 connection is told (GOAWAY) to
        send no new request on it: what it sends after that is refused unprocessed, and its
        consumer may send it to another provider; (4) the consumer port answers what it has in
        flight (aiohttp closes its idle connections), the provider port answers its open streams
        and its peers close their connections once answered."""
        limit = self.config.limits.drain_timeout
        # (1), (2)
        self.stopping = True
        if self._provider_server is not None:
            self._provider_server.close()
        if self._consumer_tls is not None:
            self._consumer_tls.close()
        # (3)
        for conn in list(self.provider_connections):
            conn.drain()
        log.info(
            "stopping: %d provider connection(s) and the consumer port drain (at most %g s)",
            len(self.provider_connections),
            limit,
        )
        # (4)
        await asyncio.gather(self._drain_consumer_port(limit), self._drain_provider_port(limit))

    async def _drain_consumer_port(self, limit: float) -> None:
        """aiohttp's cleanup waits for the handlers in flight, at most its shutdown timeout, then
        cancels them and closes the port: it is never cancelled from outside (that would stop it
        halfway, the handlers neither finished nor cancelled)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            # the limit in force now (a reload may have changed it); aiohttp has no public setter
            runner._shutdown_timeout = limit
            await runner.cleanup()

    async def _drain_provider_port(self, limit: float) -> None:
        try:
            async with asyncio.timeout(limit):
                while any(conn.open for conn in self.provider_connections):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            log.warning("exchanges still in flight after %g s are cut off", limit)

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
        if self._status_runner is not None:
            await self._status_runner.cleanup()
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

    # -- what it says about itself (exchange.server.selfreport) ----------------------------------

    def health(self) -> dict[str, Any]:
        return self.report.health()

    def health_report(self) -> tuple[int, dict[str, Any]]:
        return self.report.health_report()

    def verdict(self) -> Verdict:
        return self.report.verdict()

    @property
    def consumer_https(self) -> bool:
        """Whether the consumer port also listens for HTTPS."""
        return self._consumer_tls is not None

    @property
    def archiving(self) -> dict[str, Any]:
        return self.archiver.state


def _is_fingerprints(config: ServerConfig) -> dict[SubsystemId, frozenset[str]]:
    """Per client, the fingerprints of the information systems' certificates registered for it."""
    return {
        c.id: frozenset(fingerprint(x) for p in c.is_certs for x in load_certificates(p))
        for c in config.clients
    }


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
