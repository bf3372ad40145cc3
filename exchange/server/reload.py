"""What ``exchange server reload`` (SIGHUP) may change in a running security server, and how it
tells the operator what happened.

A reload re-reads ``server.toml``: keys and certificates, ``[[services]]``, ``[[clients]]``,
``[policy] dir`` (and the policy files), ``[logging]``, ``[messagelog] bodies`` and the
time-stamping failure limit, and the limits read per exchange. What is bound when the server
starts cannot change without a restart (:data:`RESTART_ONLY`): a reload that changes one of them
is refused as a whole, with a message naming each, and the configuration in force stays.

The outcome of each reload is written to ``reload.json`` in the state directory
(:func:`write_outcome`: a sequence number, when, whether it was applied, what changed or why it
was refused), so that ``exchange server reload`` can wait for it and say it. No IO here but
that file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from exchange.durable import write_durably
from exchange.server.config import ServerConfig

OUTCOME_FILE: Final = "reload.json"

RESTART_ONLY: Final[tuple[tuple[str, Callable[[ServerConfig], object]], ...]] = (
    ("server_id", lambda c: c.server_id),
    ("state_dir", lambda c: c.state_dir),
    ("anchor", lambda c: c.anchor),
    ("globalconf_state", lambda c: c.globalconf_state),
    ("consumer (host, port)", lambda c: c.consumer),
    ("consumer_tls (host, port)", lambda c: c.consumer_tls),
    ("provider (host, port)", lambda c: c.provider),
    ("status (host, port, enabled)", lambda c: c.status),
    ("keys.passphrase_env", lambda c: c.passphrase_env),
    ("messagelog.path", lambda c: c.log_path),
    ("messagelog.archive_dir", lambda c: c.retention.archive_dir),
    ("messagelog.retention_days (archiving on or off)", lambda c: c.retention.days is None),
    ("limits.clock_skew_seconds", lambda c: c.limits.clock_skew_seconds),
    ("limits.connect_timeout", lambda c: c.limits.connect_timeout),
    ("limits.max_pending_handshakes", lambda c: c.limits.max_pending_handshakes),
    ("limits.tls_handshake_timeout", lambda c: c.limits.tls_handshake_timeout),
)
"""Settings bound at start (sockets, files, the identity, caches sized by them)."""


def needs_restart(old: ServerConfig, new: ServerConfig) -> list[str]:
    """The :data:`RESTART_ONLY` settings that ``new`` changes."""
    return [name for name, value in RESTART_ONLY if value(old) != value(new)]


def changes(old: ServerConfig, new: ServerConfig) -> list[str]:
    """What a reload from ``old`` to ``new`` changes, one line each, for the operator."""
    out = []
    out += _diff(
        "service", {str(s.id): s for s in old.services}, {str(s.id): s for s in new.services}
    )
    out += _diff("client", {str(c.id): c for c in old.clients}, {str(c.id): c for c in new.clients})
    if old.policy_dir != new.policy_dir:
        out.append(f"policy directory {old.policy_dir} -> {new.policy_dir}")
    if old.signing != new.signing or (old.auth_key, old.auth_cert) != (new.auth_key, new.auth_cert):
        out.append("keys and certificates")
    if old.logging != new.logging:
        out.append(f"logging {old.logging.format}/{old.logging.level} -> "
                   f"{new.logging.format}/{new.logging.level}")  # fmt: skip
    if old.log_bodies != new.log_bodies:
        out.append(f"messagelog.bodies {old.log_bodies} -> {new.log_bodies}")
    if old.timestamping_failure_limit != new.timestamping_failure_limit:
        out.append("messagelog.timestamping_failure_limit")
    for key, value in dataclasses.asdict(new.limits).items():
        if getattr(old.limits, key) != value:
            out.append(f"limits.{key} {getattr(old.limits, key)} -> {value}")
    return out


def _diff(what: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = [f"{what} {key} added" for key in new if key not in old]
    out += [f"{what} {key} removed" for key in old if key not in new]
    out += [f"{what} {key} changed" for key in new if key in old and old[key] != new[key]]
    return out


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    seq: int
    at: float
    applied: bool
    changes: list[str] = field(default_factory=list)
    error: str | None = None


def outcome_file(state_dir: Path) -> Path:
    return state_dir / OUTCOME_FILE


def read_outcome(state_dir: Path) -> ReloadOutcome | None:
    try:
        doc = json.loads(outcome_file(state_dir).read_bytes())
        return ReloadOutcome(
            seq=int(doc["seq"]),
            at=float(doc["at"]),
            applied=bool(doc["applied"]),
            changes=[str(c) for c in doc.get("changes", [])],
            error=doc.get("error"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_outcome(
    state_dir: Path, at: float, applied: bool, what: list[str] | str
) -> ReloadOutcome:
    """Record the outcome of a reload (the next sequence number): ``what`` is the list of
    changes when ``applied``, else why it was refused."""
    held = read_outcome(state_dir)
    outcome = ReloadOutcome(
        seq=(held.seq if held else 0) + 1,
        at=at,
        applied=applied,
        changes=what if isinstance(what, list) else [],
        error=None if isinstance(what, list) else what,
    )
    write_durably(outcome_file(state_dir), json.dumps(dataclasses.asdict(outcome)).encode())
    return outcome
