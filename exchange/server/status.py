"""What an operator wants to know about one security server without starting it."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from exchange.globalconf.verifier import load_stored
from exchange.messagelog.archive import read_index
from exchange.messagelog.store import open_readonly
from exchange.server.config import EXPIRY_WARNING_DAYS, load_server_config
from exchange.trust.keys import fingerprint, load_certificate


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
    status: dict[str, Any] = {
        "server": str(config.server_id),
        "config": str(config.path),
        "consumer": f"{config.consumer.host}:{config.consumer.port}",
        "provider": f"{config.provider.host}:{config.provider.port}",
        "auth_cert": _cert_status(load_certificate(config.auth_cert), now),
        "signing_certs": {
            str(s.member): _cert_status(load_certificate(s.cert), now) for s in config.signing
        },
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
            "expires_at": dt.datetime.fromtimestamp(conf.expires_at, dt.UTC).isoformat(),
            "fresh": not conf.is_expired(now_s),
        }
    )
    if config.log_path.exists():
        conn = open_readonly(config.log_path)
        try:
            (count,) = conn.execute("SELECT count(*) FROM records").fetchone()
            archives = read_index(conn)
        finally:
            conn.close()
        status["message_log"] = {
            "path": str(config.log_path),
            "records": count,
            "archives": len(archives),
            "archived_records": archives[-1].end_seq if archives else 0,
        }
    return status
