"""What an operator wants to know about one security server, whether it runs or not.

From its files: identity, certificates, the stored global configuration (version, expiry), the
OCSP responses the message log holds for its own certificates (produced, next update, age), the
log's time-stamping state, maintenance mode. When the server runs, ``live`` adds what only the
process knows, from its status listener's ``/health``: the verdict and its reasons, the last
successful fetch of the global configuration, the OCSP responses in use.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509 import ocsp

from exchange.globalconf.verifier import load_stored
from exchange.messagelog.archive import read_index
from exchange.messagelog.store import open_readonly, read_ocsp_responses
from exchange.protocol.jws import cert_thumbprint
from exchange.server.config import EXPIRY_WARNING_DAYS, ServerConfig, load_server_config
from exchange.server.maintenance import read_maintenance
from exchange.server.runtime import fetch_health, running_server, status_url
from exchange.trust.keys import fingerprint, load_certificate
from exchange.utc import iso_seconds


def _cert_status(cert: x509.Certificate, now: dt.datetime) -> dict[str, Any]:
    left = cert.not_valid_after_utc - now
    return {
        "subject": cert.subject.rfc4514_string(),
        "fingerprint": fingerprint(cert),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "days_left": left.days,
        "warning": "expires soon" if left.days < EXPIRY_WARNING_DAYS else None,
    }


def server_status(config_path: Path) -> dict[str, Any]:
    config = load_server_config(config_path)
    now = dt.datetime.now(dt.UTC)
    auth = load_certificate(config.auth_cert)
    signing = [(s.member, load_certificate(s.cert)) for s in config.signing]
    status: dict[str, Any] = {
        "server": str(config.server_id),
        "config": str(config.path),
        "consumer": f"{config.consumer.host}:{config.consumer.port}",
        "provider": f"{config.provider.host}:{config.provider.port}",
        "auth_cert": _cert_status(auth, now),
        "signing_certs": {str(member): _cert_status(cert, now) for member, cert in signing},
        "clients": [str(c.id) for c in config.clients],
        "services": {str(s.id): s.url for s in config.services},
    }
    now_s = int(time.time())
    conf = load_stored(config.anchor, config.globalconf_state, now_s)
    status["globalconf"] = (
        None
        if conf is None
        else {
            "version": conf.version,
            "generated_at": iso_seconds(conf.generated_at),
            "expires_at": iso_seconds(conf.expires_at),
            "expires_in_seconds": conf.expires_at - now_s,
            "fresh": not conf.is_expired(now_s),
        }
    )
    maintenance = read_maintenance(config.state_dir)
    status["maintenance"] = None if maintenance is None else maintenance.to_dict()
    if config.log_path.exists():
        status.update(_log_status(config, [auth, *(cert for _, cert in signing)], now))
    running = running_server(config)
    status["running"] = running is not None
    url = status_url(config, running)
    live = fetch_health(url) if running is not None and url is not None else None
    status["live"] = None if live is None else _live(live, url)
    return status


def _live(health: dict[str, Any], url: str | None) -> dict[str, Any]:
    """What only the running process knows, from its ``/health``."""
    keys = ("status", "reasons", "warnings", "globalconf", "ocsp", "timestamping", "messagelog")
    return {"status_url": url, **{k: health.get(k) for k in keys}}


def _log_status(
    config: ServerConfig, own: list[x509.Certificate], now: dt.datetime
) -> dict[str, Any]:
    """What the message log holds: records, archives, heads, time-stamps, and the newest OCSP
    response kept for each of ``own`` (the authentication certificate first)."""
    conn = open_readonly(config.log_path)
    try:
        (count,) = conn.execute("SELECT count(*) FROM records").fetchone()
        archives = read_index(conn)
        stored = read_ocsp_responses(conn, [cert_thumbprint(c) for c in own])
        head = conn.execute("SELECT max(size) FROM tree_heads").fetchone()[0]
        stamp = conn.execute(
            "SELECT size, gen_time, tsa FROM timestamps ORDER BY size DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    end = (archives[-1].end_seq if archives else 0) + count
    return {
        "message_log": {
            "path": str(config.log_path),
            "records": count,
            "archives": len(archives),
            "archived_records": archives[-1].end_seq if archives else 0,
            "unsigned_records": end - (head or 0),
        },
        "timestamping": {
            "last_stamped_size": stamp[0] if stamp else None,
            "last_stamp_time": iso_seconds(stamp[1] / 1000) if stamp else None,
            "last_stamp_tsa": stamp[2] if stamp else None,
            "untimestamped_records": end - (stamp[0] if stamp else 0),
        },
        "ocsp": _stored_ocsp(own, stored, now),
    }


def _stored_ocsp(
    own: list[x509.Certificate], stored: dict[str, list[bytes]], now: dt.datetime
) -> list[dict[str, Any]]:
    """Per own certificate, the newest OCSP response the log holds (the server verified it
    before keeping it): produced, this and next update, age."""
    newest: dict[str, ocsp.OCSPResponse] = {}
    for thumbprint, ders in stored.items():
        for der in ders:
            try:
                response = ocsp.load_der_ocsp_response(der)
                this_update = response.this_update_utc
            except ValueError:
                continue
            held = newest.get(thumbprint)
            if held is None or this_update > held.this_update_utc:
                newest[thumbprint] = response
    out = []
    for index, cert in enumerate(own):
        found = newest.get(cert_thumbprint(cert))
        entry: dict[str, Any] = {
            "certificate": cert.subject.rfc4514_string(),
            "usage": "auth" if index == 0 else "sign",
            "produced_at": None,
            "this_update": None,
            "next_update": None,
            "age_seconds": None,
        }
        if found is not None:
            next_update = found.next_update_utc
            entry.update(
                produced_at=found.produced_at_utc.isoformat(),
                this_update=found.this_update_utc.isoformat(),
                next_update=next_update.isoformat() if next_update else None,
                age_seconds=int((now - found.this_update_utc).total_seconds()),
            )
        out.append(entry)
    return out
