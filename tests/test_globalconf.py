"""The global configuration document, its anchor, signing and the trusted-state verifier."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.errors import ConfigurationError, GlobalConfError, OutdatedGlobalConf
from exchange.globalconf import (
    Anchor,
    ApprovedCA,
    ApprovedTSA,
    GlobalConf,
    GlobalConfEquivocation,
    GlobalConfExpired,
    GlobalConfRollback,
    GlobalConfSignatureError,
    GlobalGroup,
    MemberInfo,
    SecurityServerInfo,
    Settings,
    TrustedGlobalConf,
    sign_globalconf,
)
from exchange.globalconf.floor import GlobalConfFloorError, floor_path, read_floor, write_floor
from exchange.identifiers import (
    parse_global_group,
    parse_member,
    parse_security_server,
    parse_subsystem,
)
from exchange.protocol.canonical import b64url, b64url_decode, canonical_bytes
from exchange.protocol.jws import Signer, cert_thumbprint
from exchange.trust.keys import cert_pem, generate_key, self_signed_certificate

NOW = 1_800_000_000
MOI = parse_member("PS/GOV/MOI")
REGISTRY = parse_subsystem("PS/GOV/MOI/population-registry")
POST = parse_member("PS/GOV/POST")
BIDDU = parse_subsystem("PS/GOV/POST/biddu-window")
SS1 = parse_security_server("PS/GOV/MOI/ss1")
SS2 = parse_security_server("PS/GOV/POST/ss1")
WINDOWS = parse_global_group("PS/unified-windows")
FP1 = "a" * 64
FP2 = "b" * 64
FP3 = "c" * 64


def new_signer(cn: str) -> Signer:
    key = generate_key()
    return Signer(key, self_signed_certificate(key, cn))


@functools.cache
def ca_pem() -> str:
    return cert_pem(self_signed_certificate(generate_key(), "PS Root CA"))


@pytest.fixture(scope="module")
def signer() -> Signer:
    return new_signer("PS global configuration signing")


@pytest.fixture(scope="module")
def anchor(signer: Signer) -> Anchor:
    return Anchor(
        instance="PS",
        download_url="http://127.0.0.1:4000/globalconf",
        generated_at=NOW,
        verification_certs=(cert_pem(signer.cert),),
    )


def make_conf(
    version: int = 1, generated_at: int = NOW, *, instance: str = "PS", name: str = "Interior"
) -> GlobalConf:
    return GlobalConf(
        instance=instance,
        version=version,
        generated_at=generated_at,
        expires_at=generated_at + 600,
        members=(
            MemberInfo(MOI, name, (REGISTRY,)),
            MemberInfo(POST, "Palestine Post", (BIDDU,)),
        ),
        security_servers=(
            SecurityServerInfo(SS1, "127.0.0.1:8443", (FP1, FP2), (REGISTRY,)),
            SecurityServerInfo(SS2, "[::1]:9443", (FP3,), (BIDDU, REGISTRY)),
        ),
        approved_cas=(ApprovedCA("PS Root CA", ca_pem(), ("http://127.0.0.1:8888/ocsp",)),),
        approved_tsas=(ApprovedTSA("PS TSA", "http://127.0.0.1:8889/tsa", ca_pem()),),
        global_groups=(GlobalGroup(WINDOWS, "Post office windows", (BIDDU, MOI)),),
        settings=Settings(),
    )


# --- the document -------------------------------------------------------------------------------


def test_round_trip_through_dict_and_canonical_bytes() -> None:
    conf = make_conf()
    again = GlobalConf.from_dict(conf.to_dict())
    assert again == conf
    assert canonical_bytes(again.to_dict()) == canonical_bytes(conf.to_dict())
    assert GlobalConf.from_json(canonical_bytes(conf.to_dict())) == conf


def test_lookups() -> None:
    conf = make_conf()
    assert [s.id for s in conf.servers_hosting(REGISTRY)] == [SS1, SS2]
    assert conf.servers_hosting(parse_subsystem("PS/GOV/MOI/other")) == ()
    assert conf.server_by_fingerprint(FP2).id == SS1  # type: ignore[union-attr]
    assert conf.server_by_fingerprint(FP3.upper()).id == SS2  # type: ignore[union-attr]
    assert conf.server_by_fingerprint("d" * 64) is None
    assert conf.server(SS2) is not None and conf.server(parse_security_server("PS/X/Y/z")) is None
    assert conf.has_member(POST) and not conf.has_member(parse_member("PS/GOV/MOF"))
    assert conf.has_subsystem(BIDDU) and not conf.has_subsystem(parse_subsystem("PS/GOV/MOI/x"))
    assert conf.member(MOI) == MemberInfo(MOI, "Interior", (REGISTRY,))
    assert conf.groups_of(BIDDU) == frozenset({WINDOWS})
    assert conf.groups_of(MOI) == frozenset({WINDOWS})
    assert conf.groups_of(REGISTRY) == frozenset()  # listing the member does not cover it
    assert [c.subject.rfc4514_string() for c in conf.ca_certs()] == ["CN=PS Root CA"]
    assert len(conf.tsa_certs()) == 1


def test_expiry_boundary() -> None:
    conf = make_conf()
    assert not conf.is_expired(NOW + 599)
    assert conf.is_expired(NOW + 600)


def test_same_content_ignores_only_the_times() -> None:
    conf = make_conf()
    assert conf.same_content(make_conf(generated_at=NOW + 60))
    assert not conf.same_content(make_conf(name="Ministry of Interior"))


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _duplicate(key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc[key].append(copy.deepcopy(doc[key][0]))

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(_delete(("version",)), "missing 'version'", id="missing-version"),
        pytest.param(_set(("version",), "7"), "version: expected an integer", id="version-text"),
        pytest.param(_set(("version",), True), "version: expected an integer", id="version-bool"),
        pytest.param(_set(("version",), -1), "version: expected an integer", id="version-neg"),
        pytest.param(_set(("instance",), "P S"), "instance", id="bad-instance"),
        pytest.param(_set(("members",), {}), "members: expected a list", id="members-object"),
        pytest.param(_set(("members", 0), "PS/GOV/MOI"), "expected an object", id="member-text"),
        pytest.param(
            _set(("members", 0, "id"), "PS/GOV"), "members[0].id", id="member-id-two-parts"
        ),
        pytest.param(
            _set(("members", 0, "subsystems"), ["PS/GOV/POST/x"]),
            "does not belong to member",
            id="subsystem-of-other-member",
        ),
        pytest.param(
            _set(("security_servers", 0, "auth_cert_fingerprints"), ["AB" * 32]),
            "fingerprint",
            id="fingerprint-uppercase",
        ),
        pytest.param(
            _set(("security_servers", 0, "auth_cert_fingerprints"), ["ab" * 31]),
            "fingerprint",
            id="fingerprint-short",
        ),
        pytest.param(
            _set(("security_servers", 1, "auth_cert_fingerprints"), [FP1]),
            "more than one server",
            id="fingerprint-on-two-servers",
        ),
        pytest.param(
            _set(("security_servers", 0, "address"), "127.0.0.1"), "host:port", id="no-port"
        ),
        pytest.param(
            _set(("security_servers", 0, "address"), "h:70000"), "host:port", id="port-range"
        ),
        pytest.param(
            _set(("security_servers", 0, "address"), "h:８０"), "host:port", id="port-not-ascii"
        ),
        pytest.param(
            _set(("security_servers", 0, "clients"), ["PS/GOV/MOI"]),
            "clients[0]",
            id="client-is-member",
        ),
        pytest.param(
            _set(("approved_cas", 0, "cert_pem"), "not a pem"), "not a PEM", id="ca-not-pem"
        ),
        pytest.param(
            _set(("approved_tsas", 0, "url"), 5), "url: expected a string", id="tsa-url-number"
        ),
        pytest.param(
            _set(("global_groups", 0, "id"), "PS/a/b"), "global_groups[0].id", id="group-id"
        ),
        pytest.param(
            _set(("global_groups", 0, "members"), ["PS/x"]), "members[0]", id="group-member-bad"
        ),
        pytest.param(_duplicate("members"), "more than once", id="duplicate-member"),
        pytest.param(_duplicate("global_groups"), "more than once", id="duplicate-group"),
        pytest.param(_set(("expires_at",), NOW - 1), "before generated_at", id="expires-first"),
        pytest.param(
            _set(("settings", "globalconf_expiry_seconds"), 0), "expected an integer >= 1", id="0s"
        ),
        pytest.param(_delete(("settings", "ocsp_freshness_seconds")), "missing", id="no-ocsp"),
    ],
)
def test_malformed_documents_are_refused(
    mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = make_conf().to_dict()
    mutate(doc)
    with pytest.raises(GlobalConfError, match="global configuration") as info:
        GlobalConf.from_dict(doc)
    assert message in info.value.message
    assert info.value.code == "Server.ClientProxy.InvalidGlobalConf"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[]", id="list"),
        pytest.param(b"null", id="null"),
    ],
)
def test_from_json_refuses_non_documents(payload: bytes) -> None:
    with pytest.raises(GlobalConfError):
        GlobalConf.from_json(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*prefix, i))
    return found


def _parse_or_refuse(doc: Any) -> None:
    with contextlib.suppress(GlobalConfError):
        GlobalConf.from_dict(doc)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_random_values_parse_or_raise_globalconf_error(doc: Any) -> None:
    _parse_or_refuse(doc)


@functools.cache
def _valid_doc() -> dict[str, Any]:
    return make_conf().to_dict()


@settings(max_examples=200, deadline=None)
@given(st.data(), json_values)
def test_mutated_documents_parse_or_raise_globalconf_error(data: st.DataObject, value: Any) -> None:
    doc = copy.deepcopy(_valid_doc())
    path = data.draw(st.sampled_from(_paths(doc)))
    _set(path, value)(doc)
    _parse_or_refuse(doc)


# --- the anchor ---------------------------------------------------------------------------------


def test_anchor_save_load_and_key_lookup(tmp_path: Path, anchor: Anchor, signer: Signer) -> None:
    path = anchor.save(tmp_path / "anchor.json")
    loaded = Anchor.load(path)
    assert loaded == anchor
    assert loaded.key_for(signer.thumbprint).public_numbers() == (
        signer.key.public_key().public_numbers()
    )
    with pytest.raises(GlobalConfError, match="anchor does not hold"):
        loaded.key_for(cert_thumbprint(new_signer("other").cert))


def _p384_pem() -> str:
    key = ec.generate_private_key(ec.SECP384R1())
    return cert_pem(self_signed_certificate(key, "P-384"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{", "not JSON", id="not-json"),
        pytest.param("[]", "not a JSON object", id="list"),
        pytest.param('{"instance": "P S"}', "instance", id="bad-instance"),
        pytest.param('{"instance": "PS", "download_url": "ftp://x"}', "download_url", id="ftp-url"),
        pytest.param(
            '{"instance": "PS", "download_url": "http://x", "generated_at": "now"}',
            "generated_at",
            id="time-text",
        ),
        pytest.param(
            '{"instance": "PS", "download_url": "http://x", "generated_at": 1,'
            ' "verification_certs": []}',
            "no verification certificate",
            id="no-certs",
        ),
        pytest.param(
            '{"instance": "PS", "download_url": "http://x", "generated_at": 1,'
            ' "verification_certs": ["junk"]}',
            "not PEM",
            id="cert-junk",
        ),
    ],
)
def test_malformed_anchors_are_configuration_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Anchor.from_json(text)


def test_anchor_refuses_keys_other_than_p256() -> None:
    with pytest.raises(ConfigurationError, match="P-256"):
        Anchor("PS", "http://x/globalconf", NOW, (_p384_pem(),))


def test_missing_anchor_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read anchor"):
        Anchor.load(tmp_path / "nope.json")


# --- signing ------------------------------------------------------------------------------------


def test_signed_conf_verifies_with_any_jose_library(signer: Signer) -> None:
    conf = make_conf()
    token = sign_globalconf(conf, signer)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "x5t#S256": signer.thumbprint}
    decoded = jwt.decode(token, signer.key.public_key(), algorithms=["ES256"])
    assert decoded == conf.to_dict()
    assert b64url_decode(token.split(b".")[1].decode()) == canonical_bytes(conf.to_dict())


# --- the verifier -------------------------------------------------------------------------------


def signed(conf: GlobalConf, by: Signer) -> bytes:
    return sign_globalconf(conf, by)


def test_good_update_then_equal_version_is_no_change(anchor: Anchor, signer: Signer) -> None:
    trusted = TrustedGlobalConf(anchor, now=NOW)
    assert trusted.current is None
    data = signed(make_conf(1), signer)
    assert trusted.update(data, NOW) is True
    assert trusted.current == make_conf(1)
    assert trusted.current_bytes == data
    assert trusted.update(data, NOW + 1) is False
    assert trusted.update(signed(make_conf(2), signer), NOW + 2) is True
    assert trusted.check_fresh(NOW + 3).version == 2


def test_refresh_of_the_same_version_extends_expiry(anchor: Anchor, signer: Signer) -> None:
    trusted = TrustedGlobalConf(anchor, now=NOW)
    trusted.update(signed(make_conf(3), signer), NOW)
    refreshed = signed(make_conf(3, NOW + 60), signer)
    assert trusted.update(refreshed, NOW + 60) is False
    assert trusted.current_bytes == refreshed
    assert trusted.check_fresh(NOW + 630).expires_at == NOW + 660
    # an older signing of the same version is ignored, not adopted
    assert trusted.update(signed(make_conf(3, NOW + 30), signer), NOW + 61) is False
    assert trusted.current_bytes == refreshed


def test_rollback_is_refused_and_the_held_conf_stays(anchor: Anchor, signer: Signer) -> None:
    trusted = TrustedGlobalConf(anchor, now=NOW)
    trusted.update(signed(make_conf(5), signer), NOW)
    held = trusted.current_bytes
    with pytest.raises(GlobalConfRollback, match="rollback refused") as info:
        trusted.update(signed(make_conf(4, NOW + 10), signer), NOW + 10)
    assert info.value.code == "Server.ClientProxy.GlobalConfRollback"
    assert trusted.current_bytes == held


def test_equivocation_is_refused(anchor: Anchor, signer: Signer) -> None:
    trusted = TrustedGlobalConf(anchor, now=NOW)
    trusted.update(signed(make_conf(5), signer), NOW)
    with pytest.raises(GlobalConfEquivocation, match="different content") as info:
        trusted.update(signed(make_conf(5, name="Someone else"), signer), NOW)
    assert info.value.code == "Server.ClientProxy.InvalidGlobalConf"
    assert trusted.current == make_conf(5)


def test_expired_conf_is_refused(anchor: Anchor, signer: Signer) -> None:
    trusted = TrustedGlobalConf(anchor, now=NOW)
    with pytest.raises(GlobalConfExpired) as info:
        trusted.update(signed(make_conf(1), signer), NOW + 600)
    assert info.value.code == "Server.ClientProxy.OutdatedGlobalConf"
    assert trusted.current is None


def test_conf_from_the_future_is_refused(anchor: Anchor, signer: Signer) -> None:
    trusted = TrustedGlobalConf(anchor, now=NOW)
    assert trusted.update(signed(make_conf(1, NOW + 300), signer), NOW)
    with pytest.raises(GlobalConfError, match="in the future"):
        trusted.update(signed(make_conf(2, NOW + 301), signer), NOW)


def test_wrong_instance_is_refused(anchor: Anchor, signer: Signer) -> None:
    trusted = TrustedGlobalConf(anchor, now=NOW)
    with pytest.raises(GlobalConfError, match="instance 'XX'") as info:
        trusted.update(signed(make_conf(1, instance="XX"), signer), NOW)
    assert info.value.code == "Server.ClientProxy.InvalidGlobalConf"


def _tamper_payload(token: bytes) -> bytes:
    header, payload, sig = token.split(b".")
    raw = bytearray(b64url_decode(payload.decode()))
    raw[raw.index(b"Interior")] ^= 0x20  # "Interior" -> "interior": still valid JSON
    return b".".join([header, b64url(bytes(raw)).encode(), sig])


def _alg_none(token: bytes) -> bytes:
    _, payload, _ = token.split(b".")
    return b64url(b'{"alg":"none"}').encode() + b"." + payload + b"."


def _swap_signature(token: bytes) -> bytes:
    other = signed(make_conf(1), new_signer("forger")).split(b".")[2]
    return b".".join([*token.split(b".")[:2], other])


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda t: signed(make_conf(1), new_signer("rogue")), id="other-key"),
        pytest.param(_tamper_payload, id="tampered-payload-byte"),
        pytest.param(_swap_signature, id="signature-of-another-token"),
        pytest.param(_alg_none, id="alg-none"),
        pytest.param(lambda t: t[:-10], id="truncated-signature"),
        pytest.param(lambda t: t.replace(b".", b"", 1), id="two-segments"),
        pytest.param(lambda t: "é".encode() + t, id="not-ascii"),
        pytest.param(lambda t: b"", id="empty"),
        pytest.param(lambda t: canonical_bytes(make_conf(1).to_dict()), id="unsigned-json"),
    ],
)
def test_bad_signatures_are_refused(
    anchor: Anchor, signer: Signer, corrupt: Callable[[bytes], bytes]
) -> None:
    trusted = TrustedGlobalConf(anchor, now=NOW)
    with pytest.raises(GlobalConfSignatureError) as info:
        trusted.update(corrupt(signed(make_conf(1), signer)), NOW)
    assert info.value.code == "Server.ClientProxy.InvalidGlobalConf"
    assert trusted.current is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_globalconf_errors(data: bytes) -> None:
    anchor = Anchor("PS", "http://x/globalconf", NOW, (ca_pem(),))
    with pytest.raises(GlobalConfError):
        TrustedGlobalConf(anchor, now=NOW).update(data, NOW)


def test_check_fresh(anchor: Anchor, signer: Signer) -> None:
    trusted = TrustedGlobalConf(anchor, now=NOW)
    with pytest.raises(OutdatedGlobalConf, match="no global configuration"):
        trusted.check_fresh(NOW)
    trusted.update(signed(make_conf(1), signer), NOW)
    assert trusted.check_fresh(NOW + 599).version == 1
    with pytest.raises(OutdatedGlobalConf) as info:
        trusted.check_fresh(NOW + 600)
    assert info.value.code == "Server.ClientProxy.OutdatedGlobalConf"


def test_expired_initial_conf_still_guards_against_rollback(anchor: Anchor, signer: Signer) -> None:
    later = NOW + 3600
    trusted = TrustedGlobalConf(anchor, initial=signed(make_conf(7), signer), now=later)
    assert trusted.current is not None and trusted.current.version == 7
    with pytest.raises(OutdatedGlobalConf):
        trusted.check_fresh(later)
    with pytest.raises(GlobalConfRollback):
        trusted.update(signed(make_conf(6, later), signer), later)
    assert trusted.update(signed(make_conf(7, later), signer), later) is False
    assert trusted.check_fresh(later).version == 7


def test_initial_conf_must_verify(anchor: Anchor) -> None:
    with pytest.raises(GlobalConfSignatureError):
        TrustedGlobalConf(anchor, initial=signed(make_conf(1), new_signer("x")), now=NOW)


def test_rotated_anchor_accepts_either_key(anchor: Anchor, signer: Signer) -> None:
    new = new_signer("PS global configuration signing 2")
    rotated = dataclasses.replace(
        anchor, verification_certs=(*anchor.verification_certs, cert_pem(new.cert))
    )
    trusted = TrustedGlobalConf(rotated, now=NOW)
    assert trusted.update(signed(make_conf(1), signer), NOW)
    assert trusted.update(signed(make_conf(2), new), NOW)


# --- the version floor (globalconf/floor.py) ----------------------------------------------------


def test_the_floor_refuses_an_older_version_while_none_is_held(
    anchor: Anchor, signer: Signer
) -> None:
    trusted = TrustedGlobalConf(anchor, now=NOW, floor=5)
    for offer in (trusted.update, trusted.load_local):
        with pytest.raises(GlobalConfRollback, match="older than version 5, the highest") as info:
            offer(signed(make_conf(4), signer), NOW)
        assert info.value.code == "Server.ClientProxy.GlobalConfRollback"
    assert trusted.current is None
    assert trusted.update(signed(make_conf(5), signer), NOW) is True
    assert trusted.floor == 5


def test_raise_floor_never_lowers_it(anchor: Anchor, signer: Signer) -> None:
    trusted = TrustedGlobalConf(anchor, now=NOW)
    trusted.raise_floor(7)
    trusted.raise_floor(3)
    assert trusted.floor == 7
    with pytest.raises(GlobalConfRollback):
        trusted.update(signed(make_conf(6), signer), NOW)
    assert trusted.update(signed(make_conf(9), signer), NOW) is True
    assert trusted.floor == 9


def test_floor_file_round_trip_and_missing(tmp_path: Path) -> None:
    path = floor_path(tmp_path / "globalconf.jws")
    assert path.name == "globalconf.jws.floor"
    assert read_floor(path) is None
    write_floor(path, 21)
    assert path.read_bytes() == b'{"version": 21}\n'
    assert read_floor(path) == 21


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=64),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.sampled_from(["version", "v", ""]), inner, max_size=2)
            ),
            max_leaves=6,
        ).map(lambda doc: json.dumps({"version": doc}).encode()),
    )
)
def test_floor_files_read_as_a_version_or_raise_the_floor_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "globalconf.jws.floor"
        path.write_bytes(data)
        try:
            version = read_floor(path)
        except GlobalConfFloorError as exc:
            assert str(path) in exc.message
            assert exc.code == "Server.ConfigurationError"
        else:
            assert type(version) is int and version >= 0
