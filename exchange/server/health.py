"""Whether a security server can serve: the one decision behind ``/health``'s 200 or 503.

:func:`judge` takes what the server knows at one reference time (:class:`HealthFacts`, gathered
by the server) and returns the reasons it cannot serve, and the warnings an operator should act
on while it still can. No IO, no clock of its own.

A reason makes ``/health`` answer 503, so that a load balancer sends the exchanges elsewhere:

- ``maintenance``: the operator drains the node (``exchange server maintenance on``);
- ``stopping``: SIGTERM; exchanges in flight finish, no new ones are taken;
- ``globalconf_missing``, ``globalconf_expired``: exchanges fail with ``OutdatedGlobalConf``;
- ``ocsp_missing``, ``ocsp_stale``: an own certificate whose CA publishes OCSP holds no fresh
  "good" response, so peers refuse this server (``CertificateStatusUnknown``);
- ``timestamping_failed``: tree heads went un-time-stamped past the limit; exchanges are refused;
- ``messagelog_unwritable``: the last commit of the message log failed (a full disk, say), and no
  write has succeeded since: exchanges fail with ``MessageLogFailed`` (none is answered unlogged);
- ``signing_key_unusable``: a signing or authentication certificate is expired or not yet valid,
  or a signing key did not sign.

A policy reload that failed is a warning, not a reason: the policy in force is the last good one,
decisions under it are still right, and every node of a cluster reads the same files, so a 503
would take the whole cluster out for one typo. The warning names the version in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from exchange.utc import iso_seconds

OK: Final = "ok"
UNAVAILABLE: Final = "unavailable"


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class OwnCertificate:
    """One of the server's own certificates, as revocation and validity stand."""

    subject: str
    usage: Literal["auth", "sign"]
    not_before: float
    not_after: float
    ocsp_needed: bool
    """Its CA publishes OCSP responders in the global configuration."""
    ocsp_held: bool
    """A verified "good" response is held (fresh or not)."""
    ocsp_fresh: bool


@dataclass(frozen=True, slots=True)
class HealthFacts:
    """What the server knows at ``now`` (unix seconds)."""

    now: float
    maintenance_reason: str | None = None
    maintenance: bool = False
    stopping: bool = False
    globalconf_version: int | None = None
    globalconf_expires_at: float | None = None
    certificates: Sequence[OwnCertificate] = ()
    timestamping_refusal: str | None = None
    log_write_failure: str | None = None
    unusable_keys: Sequence[str] = ()
    policy_version: str | None = None
    policy_reload_error: str | None = None
    expiry_warnings: Sequence[str] = ()
    globalconf_pending: str | None = None
    globalconf_persisted_refused: str | None = None
    globalconf_last_refusal: str | None = None
    globalconf_fetch_error: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    reasons: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = field(default=())

    @property
    def status(self) -> str:
        return UNAVAILABLE if self.reasons else OK

    @property
    def http_status(self) -> int:
        return 503 if self.reasons else 200

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reasons": [p.to_dict() for p in self.reasons],
            "warnings": [p.to_dict() for p in self.warnings],
        }


def judge(facts: HealthFacts) -> Verdict:
    """The reasons the server cannot serve at ``facts.now``, and the warnings (see the module
    docstring for each code)."""
    reasons: list[Problem] = []
    # (1) the operator's and the process's own state
    if facts.maintenance:
        why = f": {facts.maintenance_reason}" if facts.maintenance_reason else ""
        reasons.append(Problem("maintenance", f"maintenance mode is on{why}"))
    if facts.stopping:
        reasons.append(Problem("stopping", "the server is stopping: exchanges in flight finish"))
    # (2) the global configuration in force is fresh
    reasons += _globalconf(facts)
    # (3) own certificates: valid now, and a fresh OCSP response where one is needed
    reasons += _certificates(facts)
    # (4) the message log: time-stamped within its limit, and writable
    if facts.timestamping_refusal is not None:
        reasons.append(Problem("timestamping_failed", facts.timestamping_refusal))
    if facts.log_write_failure is not None:
        reasons.append(
            Problem(
                "messagelog_unwritable",
                f"the message log could not be written ({facts.log_write_failure}): exchanges "
                "fail with MessageLogFailed until a write succeeds (free disk space)",
            )
        )
    # (5) signing keys sign
    reasons += [Problem("signing_key_unusable", why) for why in facts.unusable_keys]
    return Verdict(tuple(reasons), tuple(_warnings(facts)))


def _globalconf(facts: HealthFacts) -> list[Problem]:
    downloaded, failed = facts.globalconf_last_refusal, facts.globalconf_fetch_error
    fetched = f"; the central server's was refused: {downloaded}" if downloaded else ""
    fetched += f"; the last download failed: {failed}" if failed else ""
    if facts.globalconf_expires_at is None:
        refused = facts.globalconf_persisted_refused
        why = f" (the one saved before the restart: {refused})" if refused else ""
        return [Problem("globalconf_missing", f"no global configuration is in force{why}{fetched}")]
    if facts.now > facts.globalconf_expires_at:
        return [
            Problem(
                "globalconf_expired",
                f"global configuration version {facts.globalconf_version} expired at "
                f"{iso_seconds(facts.globalconf_expires_at)}"
                + (fetched or ": is the central server reachable?"),
            )
        ]
    return []


def _certificates(facts: HealthFacts) -> list[Problem]:
    out = []
    for cert in facts.certificates:
        what = f"{'authentication' if cert.usage == 'auth' else 'signing'} certificate "
        what += cert.subject
        if not cert.not_before <= facts.now <= cert.not_after:
            out.append(
                Problem(
                    "signing_key_unusable",
                    f"{what} is valid from {iso_seconds(cert.not_before)} "
                    f"to {iso_seconds(cert.not_after)}",
                )
            )
        elif cert.ocsp_needed and not cert.ocsp_fresh:
            code = "ocsp_stale" if cert.ocsp_held else "ocsp_missing"
            state = "is stale" if cert.ocsp_held else "is missing"
            out.append(
                Problem(code, f"{what}: its OCSP response {state}, so peers refuse this server")
            )
    return out


def _warnings(facts: HealthFacts) -> list[Problem]:
    out = [Problem("certificate_expiring", w) for w in facts.expiry_warnings]
    if facts.policy_reload_error is not None:
        out.append(
            Problem(
                "policy_reload_failed",
                f"the last policy reload was refused ({facts.policy_reload_error}); version "
                f"{facts.policy_version} stays in force",
            )
        )
    if facts.globalconf_pending is not None:
        out.append(Problem("globalconf_pending", facts.globalconf_pending))
    return out
