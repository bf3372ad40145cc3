"""OCSP for a security server's own certificates (docs/design.md §5 "Revocation"): fetched ahead of
time and stapled to its HELLO frames. Peers' staples are judged by the peer trust
(:mod:`exchange.trustcore.peers`), on arrival and at every message.

A certificate needs a fresh "good" OCSP response when the approved CA that issued it publishes
OCSP responder URLs in the global configuration; a CA that publishes none is not checked (a
deployment decision the central server's operator makes, visible in the configuration).

- Own certificates (authentication and signing): fetched from the issuing CA's responders at
  start and refreshed before half their usable life has passed (freshness from the global
  configuration, default 3600 s). While a responder is down the held response stays usable
  until it is stale; then peers refuse us, and the operator log says why.
- At start, the responses the message log kept for our own certificates are verified again and
  those still fresh are used (:meth:`RevocationChecks.seed_own`): a server restarted while the
  responder is down serves with them. While a certificate that needs a response holds no fresh
  one, the refresh is retried every few seconds (:meth:`RevocationChecks.next_refresh`), not on
  the normal interval, so the server serves again as soon as the responder answers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from cryptography import x509

from exchange.globalconf.document import GlobalConf
from exchange.protocol.jws import cert_thumbprint
from exchange.trust.ocsp import OcspError, OcspStapleCache
from exchange.trust.ocsp_service import OcspFetcher, OcspUnavailable
from exchange.utc import utc

log = logging.getLogger("exchange.server.revocation")

RETRY_MAX: Final = 8.0
"""The longest wait between refreshes while an own certificate holds no fresh response (s)."""


Responder = tuple[x509.Certificate, tuple[str, ...]]


class _ResponderIndex:
    """Which CA's responders cover a certificate, remembered per configuration: finding the
    issuer verifies a signature, too dear for every message."""

    def __init__(self) -> None:
        self._conf: GlobalConf | None = None
        self._known: dict[str, Responder | None] = {}

    def __call__(self, cert: x509.Certificate, conf: GlobalConf) -> Responder | None:
        if conf is not self._conf:
            self._conf = conf
            self._known = {}
        key = cert_thumbprint(cert)
        if key not in self._known:
            self._known[key] = conf.ocsp_issuer(cert)
        return self._known[key]


class RevocationChecks:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.own = OcspStapleCache()
        self.fetcher = OcspFetcher(clock=clock)
        self.responder_of = _ResponderIndex()
        self._retries = 0
        # where verified responses are kept as evidence (the message log), once set
        self.keep: Callable[[x509.Certificate, bytes], None] | None = None

    async def close(self) -> None:
        await self.fetcher.close()

    # -- own certificates ---------------------------------------------------------------------

    async def refresh_own(self, certs: Sequence[x509.Certificate], conf: GlobalConf) -> bool:
        """Fetch what is due; True if a new response was taken (peers should be re-stapled)."""
        freshness = conf.settings.ocsp_freshness_seconds
        changed = False
        for cert in certs:
            responder = self.responder_of(cert, conf)
            if responder is None or not self.own.needs_refresh(cert, utc(self.clock()), freshness):
                continue
            ca, urls = responder
            try:
                status = await self.fetcher.refresh(
                    self.own, cert, ca, urls, max_age_seconds=freshness
                )
                changed = True
                if self.keep is not None:
                    self.keep(cert, status.response_der)
            except OcspUnavailable as exc:
                log.error("OCSP responder unreachable for own certificate: %s", exc.internal)
            except OcspError as exc:
                log.error(
                    "own certificate %s: %s (%s) — rotate it",
                    cert.subject.rfc4514_string(),
                    exc.message,
                    exc.code,
                )
        return changed

    def seed_own(
        self,
        certs: Sequence[x509.Certificate],
        conf: GlobalConf,
        stored: Mapping[str, Sequence[bytes]],
    ) -> int:
        """Take the stored responses (x5t#S256 -> DER, as the message log kept them) for our
        ``certs`` that verify and are fresh now; returns how many certificates got one."""
        now = utc(self.clock())
        freshness = conf.settings.ocsp_freshness_seconds
        seeded = 0
        for cert in certs:
            responder = self.responder_of(cert, conf)
            if responder is None:
                continue
            for der in stored.get(cert_thumbprint(cert), ()):
                with contextlib.suppress(OcspError):
                    self.own.put(
                        der, cert=cert, issuer=responder[0], now=now, max_age_seconds=freshness
                    )
            if self.own.get(cert, now, freshness) is not None:
                seeded += 1
        return seeded

    def next_refresh(self, certs: Sequence[x509.Certificate], conf: GlobalConf) -> float:
        """Seconds until the next refresh: short (doubling from 1 s to :data:`RETRY_MAX`) while
        a certificate that needs a response holds no fresh one, else the normal interval."""
        if self.missing_staples(certs, conf):
            delay = min(RETRY_MAX, 2.0**self._retries)
            self._retries += 1
            return delay
        self._retries = 0
        return max(1.0, min(60.0, conf.settings.ocsp_freshness_seconds / 8))

    def missing_staples(self, certs: Sequence[x509.Certificate], conf: GlobalConf) -> list[str]:
        """Subjects of our certificates that need an OCSP response and hold no fresh one."""
        freshness = conf.settings.ocsp_freshness_seconds
        now = utc(self.clock())
        return [
            cert.subject.rfc4514_string()
            for cert in certs
            if self.responder_of(cert, conf) is not None
            and self.own.get(cert, now, freshness) is None
        ]

    def own_response(self, cert: x509.Certificate, conf: GlobalConf) -> bytes | None:
        """The fresh response held for one of our certificates (DER), if any."""
        held = self.own.get(cert, utc(self.clock()), conf.settings.ocsp_freshness_seconds)
        return held.response_der if held is not None else None

    def own_staples(self, certs: Sequence[x509.Certificate], conf: GlobalConf) -> dict[str, bytes]:
        """Fresh responses for our certificates, for the HELLO frame: x5t#S256 -> DER."""
        out = {}
        for cert in certs:
            der = self.own_response(cert, conf)
            if der is not None:
                out[cert_thumbprint(cert)] = der
        return out
