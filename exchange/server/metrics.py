"""``/metrics``: a security server's figures in the Prometheus text format (prometheus-client).

Each server has its own :class:`~prometheus_client.CollectorRegistry` (never the process-wide
default), holding:

- per exchange, counted once from its record when it is logged (:meth:`ServerMetrics.exchange`):
  ``exchange_exchanges_total`` by side, client, service, HTTP status and X-Road error code;
  ``exchange_phase_seconds`` histograms by side and phase (from the record's ``timings_us``:
  ``sign``, ``peer`` on the consumer; ``verify``, ``decide``, ``backend``, ``sign`` on the
  provider; ``total`` on both; and ``log_commit``, the wait for the record's durable commit);
  ``exchange_quota_refusals_total`` by client and service;
- per group commit of the message log (on its writer thread): ``exchange_messagelog_batch_records``
  and ``exchange_messagelog_commit_seconds``;
- read when scraped (:class:`StateSnapshot`, gathered by the server): global configuration age,
  expiry and last fetch; per own certificate the seconds until it expires and its OCSP response's
  age; records not yet under a signed tree head, nor under a time-stamp; open EXM/1 connections
  per peer security server; maintenance and health.

Label values are bounded: a client or service is named only when the global configuration in
force registers it (a service: when this server provides it or its subsystem is registered),
at most :data:`MAX_LABEL_VALUES` of each, else ``other``; error codes are X-Road codes, at most
:data:`MAX_ERROR_CODES`. Nothing is labelled by message id, user id, path or body, so the
metrics hold no personal data.

Per exchange the hot path is a few dictionary and list updates (:class:`_Histogram`, exported by
:class:`_ExchangeCollector` at scrape time), and so is each group commit: prometheus-client's own
``Histogram.observe`` takes a lock per call and cost several times more (bench/README.md).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exchange.server.records import ExchangeRecord

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
MAX_LABEL_VALUES: Final = 1000
MAX_ERROR_CODES: Final = 200
MAX_REMEMBERED_KEYS: Final = 10_000
"""Exchanges' label sets remembered, so that most exchanges are counted with one lookup."""
OTHER: Final = "other"
_CODE: Final = re.compile(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*){0,5}")

BUCKETS_US: Final = (
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
)  # fmt: skip
"""Latency bucket bounds, µs (exported in seconds)."""

PHASES: Final[Mapping[str, tuple[tuple[str, str | None, str], ...]]] = {
    # phase name, the mark it starts at (None: the exchange's start), the mark it ends at
    "consumer": (
        ("sign", None, "signed"),
        ("peer", "signed", "answered"),
        ("total", None, "total"),
    ),
    "provider": (
        ("verify", None, "verified"),
        ("decide", "verified", "decided"),
        ("backend", "decided", "backend"),
        ("sign", "backend", "signed"),
        ("total", None, "total"),
    ),
}
"""How each side's ``timings_us`` marks (µs since the exchange started) make its phases."""

RATE_LIMITED: Final = "Server.ServerProxy.RateLimited"


class _Histogram:
    """Counts per bucket and a sum, in integer units (µs unless ``bounds`` say otherwise),
    exported divided by ``scale``; each one is updated on one thread only (the event loop, or
    the message log's writer)."""

    __slots__ = ("bounds", "counts", "scale", "total")

    def __init__(self, bounds: tuple[int, ...] = BUCKETS_US, scale: float = 1e6) -> None:
        self.bounds = bounds
        self.scale = scale
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0

    def observe(self, value: int) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, None), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound is None else repr(bound / self.scale), float(running)))
        return out

    def add_to(self, family: HistogramMetricFamily, labels: Sequence[str]) -> None:
        family.add_metric(labels, self.buckets(), self.total / self.scale)


class _Bounded:
    """A label's values: each seen value kept until ``limit`` distinct ones, then ``other``."""

    __slots__ = ("limit", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


@dataclass(frozen=True, slots=True)
class CertificateState:
    subject: str
    usage: str
    not_after: float
    ocsp_this_update: float | None
    ocsp_produced_at: float | None


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """What the scrape-time gauges show, gathered by the server at ``now``."""

    now: float
    healthy: bool
    maintenance: bool
    globalconf_version: int | None = None
    globalconf_generated_at: float | None = None
    globalconf_expires_at: float | None = None
    globalconf_last_fetch: float | None = None
    certificates: Sequence[CertificateState] = ()
    log_records: int = 0
    log_signed_size: int = 0
    log_timestamped_size: int = 0
    last_timestamp_success: float | None = None
    disk_free_bytes: int | None = None
    connections: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(peer security server, ``inbound`` / ``outbound``) -> open EXM/1 connections."""


Known = Callable[[str], bool]
"""Whether a client (or service) may be a label value: registered, provided here."""


class ServerMetrics:
    """One security server's registry and the per-exchange counters behind it."""

    def __init__(self, snapshot: Callable[[], StateSnapshot]) -> None:
        self.registry = CollectorRegistry()
        self._exchanges: dict[tuple[str, str, str, str, str], int] = {}
        self._quota: dict[tuple[str, str], int] = {}
        self._phases: dict[tuple[str, str], _Histogram] = {}
        # per side: its phases' histograms with the marks that make them, and log_commit's
        self._side_phases: dict[
            str, tuple[list[tuple[_Histogram, str | None, str]], _Histogram]
        ] = {}
        self._keys: dict[
            tuple[str, str | None, str | None, int | None, str | None],
            tuple[str, str, str, str, str],
        ] = {}
        self._clients = _Bounded(MAX_LABEL_VALUES)
        self._services = _Bounded(MAX_LABEL_VALUES)
        self._codes = _Bounded(MAX_ERROR_CODES)
        self.registry.register(_ExchangeCollector(self))
        self.registry.register(_StateCollector(snapshot))
        self.batch_records = _Histogram((1, 2, 4, 8, 16, 32, 64, 128, 256, 512), scale=1)
        self.commit_us = _Histogram()

    # -- updates --------------------------------------------------------------------------------

    def commit(self, records: int, seconds: float) -> None:
        """One group commit (called on the message log's writer thread, the only one that
        updates these two histograms)."""
        self.batch_records.observe(records)
        self.commit_us.observe(round(seconds * 1e6))

    def exchange(
        self,
        rec: ExchangeRecord,
        code: str | None,
        log_us: int,
        *,
        client_known: Known,
        service_known: Known,
    ) -> None:
        """One logged exchange (or one that failed to be logged, ``code`` saying so)."""
        side = rec.side
        raw = (side, rec.client, rec.service, rec.http_status, code)
        key = self._keys.get(raw)
        if key is None:
            key = self._key(raw, client_known, service_known)
        self._exchanges[key] = self._exchanges.get(key, 0) + 1
        if code == RATE_LIMITED and side == "provider":
            self._quota[key[1:3]] = self._quota.get(key[1:3], 0) + 1
        timings = rec.timings
        known = self._side_phases.get(side)
        if known is None:
            known = self._side_phases[side] = (
                [
                    (self._phase(side, phase), start, end)
                    for phase, start, end in PHASES.get(side, ())
                ],
                self._phase(side, "log_commit"),
            )
        phases, log_commit = known
        for hist, start, end in phases:
            done = timings.get(end)
            if done is not None:
                hist.observe(done - (timings.get(start, 0) if start else 0))
        log_commit.observe(log_us)

    def _key(
        self,
        raw: tuple[str, str | None, str | None, int | None, str | None],
        client_known: Known,
        service_known: Known,
    ) -> tuple[str, str, str, str, str]:
        """The labels of an exchange (side, client, service, status, error code); remembered
        when none of them is ``other`` (a value once named stays named, whatever comes later)."""
        side, client_id, service_id, status, code = raw
        client = self._label(client_id, client_known, self._clients)
        service = self._label(service_id, service_known, self._services)
        error = "" if code is None else self._codes(code) if _CODE.fullmatch(code) else OTHER
        key = (side, client, service, str(status or 0), error)
        if OTHER not in key and len(self._keys) < MAX_REMEMBERED_KEYS:
            self._keys[raw] = key
        return key

    def _phase(self, side: str, phase: str) -> _Histogram:
        hist = self._phases.get((side, phase))
        if hist is None:
            hist = self._phases[(side, phase)] = _Histogram()
        return hist

    @staticmethod
    def _label(value: str | None, known: Known, bounded: _Bounded) -> str:
        if value is None:
            return ""
        if value in bounded.seen:
            return value
        return bounded(value) if known(value) else OTHER

    # -- exposition -----------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _ExchangeCollector(Collector):
    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        exchanges = CounterMetricFamily(
            "exchange_exchanges",
            "Exchanges logged, by side, client, service, HTTP status and X-Road error code.",
            labels=("side", "client", "service", "status", "error_code"),
        )
        for key, count in list(m._exchanges.items()):
            exchanges.add_metric(key, count)
        yield exchanges
        quota = CounterMetricFamily(
            "exchange_quota_refusals",
            "Requests refused by this provider's quotas, by client and service.",
            labels=("client", "service"),
        )
        for (client, service), count in list(m._quota.items()):
            quota.add_metric((client, service), count)
        yield quota
        phases = HistogramMetricFamily(
            "exchange_phase_seconds",
            "Time of each phase of an exchange, by side and phase.",
            labels=("side", "phase"),
        )
        for (side, phase), hist in sorted(m._phases.items()):
            hist.add_to(phases, (side, phase))
        yield phases
        batches = HistogramMetricFamily(
            "exchange_messagelog_batch_records", "Records per group commit of the message log."
        )
        m.batch_records.add_to(batches, ())
        yield batches
        commits = HistogramMetricFamily(
            "exchange_messagelog_commit_seconds",
            "Time of one group commit of the message log (insert, commit, fsync).",
        )
        m.commit_us.add_to(commits, ())
        yield commits


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], StateSnapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        s = self.snapshot()
        yield _gauge("exchange_healthy", "1 when /health answers 200, else 0.", s.healthy)
        yield _gauge("exchange_maintenance", "1 while maintenance mode is on.", s.maintenance)
        yield from _globalconf(s)
        yield from _certificates(s)
        yield from _messagelog(s)
        connections = GaugeMetricFamily(
            "exchange_peer_connections",
            "Open EXM/1 connections per peer security server and direction.",
            labels=("peer", "direction"),
        )
        for (peer, direction), count in sorted(s.connections.items()):
            connections.add_metric((peer, direction), count)
        yield connections


def _gauge(name: str, text: str, value: float | None) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, text)
    if value is not None:
        gauge.add_metric((), float(value))
    return gauge


def _globalconf(s: StateSnapshot) -> Iterable[Metric]:
    gen, exp, fetch = s.globalconf_generated_at, s.globalconf_expires_at, s.globalconf_last_fetch
    yield _gauge(
        "exchange_globalconf_version", "Version of the global configuration in force.",
        s.globalconf_version,
    )  # fmt: skip
    yield _gauge(
        "exchange_globalconf_age_seconds",
        "Seconds since the global configuration in force was generated.",
        None if gen is None else s.now - gen,
    )
    yield _gauge(
        "exchange_globalconf_expires_in_seconds",
        "Seconds until the global configuration in force expires (negative: expired).",
        None if exp is None else exp - s.now,
    )
    yield _gauge(
        "exchange_globalconf_last_fetch_age_seconds",
        "Seconds since the global configuration was last downloaded.",
        None if fetch is None else s.now - fetch,
    )


def _certificates(s: StateSnapshot) -> Iterable[Metric]:
    labels = ("certificate", "usage")
    expiry = GaugeMetricFamily(
        "exchange_certificate_expires_in_seconds",
        "Seconds until each own certificate expires.",
        labels=labels,
    )
    ocsp = GaugeMetricFamily(
        "exchange_ocsp_response_age_seconds",
        "Seconds since thisUpdate of the OCSP response held for each own certificate.",
        labels=labels,
    )
    for cert in s.certificates:
        key = (cert.subject, cert.usage)
        expiry.add_metric(key, cert.not_after - s.now)
        if cert.ocsp_this_update is not None:
            ocsp.add_metric(key, s.now - cert.ocsp_this_update)
    yield expiry
    yield ocsp


def _messagelog(s: StateSnapshot) -> Iterable[Metric]:
    yield _gauge("exchange_messagelog_records", "Records in the message log.", s.log_records)
    yield _gauge(
        "exchange_messagelog_unsigned_records",
        "Records not yet under a signed tree head.",
        max(0, s.log_records - s.log_signed_size),
    )
    yield _gauge(
        "exchange_messagelog_untimestamped_records",
        "Records not yet under a time-stamped tree head.",
        max(0, s.log_records - s.log_timestamped_size),
    )
    last = s.last_timestamp_success
    yield _gauge(
        "exchange_timestamping_last_success_age_seconds",
        "Seconds since a tree head was last time-stamped (or nothing needed one).",
        None if last is None else s.now - last,
    )
    yield _gauge(
        "exchange_messagelog_disk_free_bytes",
        "Free bytes on the file system of the message log.",
        s.disk_free_bytes,
    )
