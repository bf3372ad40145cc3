"""The health decision (``exchange.server.health.judge``): each reason a load balancer must see as
503, the warnings that are not, at one reference time."""

from __future__ import annotations

import dataclasses

import pytest

from exchange.server.health import HealthFacts, OwnCertificate, judge

NOW = 1_800_000_000.0
GOOD_CERT = OwnCertificate(
    subject="CN=PS/GOV/MOI/ss1",
    usage="auth",
    not_before=NOW - 86400,
    not_after=NOW + 86400 * 300,
    ocsp_needed=True,
    ocsp_held=True,
    ocsp_fresh=True,
)
SERVING = HealthFacts(
    now=NOW, globalconf_version=7, globalconf_expires_at=NOW + 300, certificates=[GOOD_CERT]
)


def test_a_server_that_can_serve_says_200() -> None:
    verdict = judge(SERVING)
    assert (verdict.http_status, verdict.status, verdict.reasons) == (200, "ok", ())


@pytest.mark.parametrize(
    ("change", "code"),
    [
        pytest.param({"maintenance": True, "maintenance_reason": "upgrade"}, "maintenance",
                     id="maintenance"),
        pytest.param({"stopping": True}, "stopping", id="sigterm"),
        pytest.param({"globalconf_expires_at": None}, "globalconf_missing", id="no-globalconf"),
        pytest.param({"globalconf_expires_at": NOW - 1}, "globalconf_expired",
                     id="globalconf-expired"),
        pytest.param({"certificates": [dataclasses.replace(GOOD_CERT, ocsp_fresh=False)]},
                     "ocsp_stale", id="own-ocsp-stale"),
        pytest.param({"certificates": [dataclasses.replace(GOOD_CERT, ocsp_fresh=False,
                                                           ocsp_held=False)]},
                     "ocsp_missing", id="own-ocsp-missing"),
        pytest.param({"certificates": [dataclasses.replace(GOOD_CERT, not_after=NOW - 1)]},
                     "signing_key_unusable", id="own-cert-expired"),
        pytest.param({"unusable_keys": ["the signing key of PS/GOV/MOI does not sign"]},
                     "signing_key_unusable", id="key-does-not-sign"),
        pytest.param({"timestamping_refusal": "not time-stamped for 14500 s"},
                     "timestamping_failed", id="timestamping-limit"),
        pytest.param({"log_write_failure": "OperationalError: database or disk is full"},
                     "messagelog_unwritable", id="full-disk"),
    ],
)  # fmt: skip
def test_each_reason_it_cannot_serve_is_a_503(change: dict[str, object], code: str) -> None:
    verdict = judge(dataclasses.replace(SERVING, **change))  # type: ignore[arg-type]
    assert verdict.http_status == 503
    assert [r.code for r in verdict.reasons] == [code]


def test_an_own_certificate_whose_ca_publishes_no_ocsp_needs_none() -> None:
    cert = dataclasses.replace(GOOD_CERT, ocsp_needed=False, ocsp_held=False, ocsp_fresh=False)
    assert judge(dataclasses.replace(SERVING, certificates=[cert])).http_status == 200


def test_a_refused_policy_reload_is_a_warning_naming_the_policy_in_force() -> None:
    facts = dataclasses.replace(
        SERVING, policy_version="abc123", policy_reload_error="policy.toml:3: bad grant"
    )
    verdict = judge(facts)
    assert verdict.http_status == 200
    (warning,) = verdict.warnings
    assert warning.code == "policy_reload_failed"
    assert "abc123 stays in force" in warning.message


@pytest.mark.parametrize(
    ("change", "says"),
    [
        pytest.param({}, ": is the central server reachable?", id="nothing-known"),
        pytest.param(
            {"globalconf_fetch_error": "Cannot connect to host"},
            "; the last download failed: Cannot connect to host",
            id="download-failed",
        ),
        pytest.param(
            {"globalconf_last_refusal": "version 19 is older than version 20"},
            "; the central server's was refused: version 19 is older than version 20",
            id="download-refused",
        ),
    ],
)
def test_an_expired_configuration_says_what_the_poller_knows(
    change: dict[str, object], says: str
) -> None:
    """Why the configuration was not renewed, as far as the server knows: the central server
    unreachable, or what it served refused (the fourth red team: a refusal hid the download
    failure, and neither was shown before)."""
    facts = dataclasses.replace(SERVING, globalconf_expires_at=NOW - 1, **change)  # type: ignore[arg-type]
    [reason] = judge(facts).reasons
    assert reason.code == "globalconf_expired" and reason.message.endswith(says), reason.message
