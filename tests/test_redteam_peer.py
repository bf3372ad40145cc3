"""Red team: a rogue registered peer flooding HELLOs, or signing with a refused certificate
(issue 13's session and peer trust).

A HELLO is a few KiB on the wire; judging one costs its receiver a chain validation per new
certificate and an OCSP verification per staple, on the event loop that serves every peer.
Before: any number of HELLOs was accepted on an open connection, each judged in full again; every
certificate ever presented was kept by the peer trust for as long as the configuration version
lasted; and a refusal was kept as the exception raised, re-raised at every HELLO and every
request signed with that certificate, its traceback growing each time and holding the frames
(the HELLO, the request and its body) it passed through. So a registered peer could keep a
provider's (or, as a rogue provider, a consumer's) event loop busy and grow its memory without
bound, with one connection.

Now: the session takes a further HELLO only within a budget (:data:`HELLO_BURST` at once, one
per :data:`HELLO_EVERY` seconds), else the connection is refused; the peer trust keeps at most
:data:`MAX_JUDGED` judged certificates, and a refusal as a plain copy raised afresh, each with
its own ``detail`` id.
"""

from __future__ import annotations

import datetime as dt
import gc
import weakref

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from exchange.errors import ExchangeError
from exchange.protocol.frames import FrameKind, encode_frame
from exchange.protocol.hello import Hello, hello_meta
from exchange.protocol.jws import cert_thumbprint
from exchange.protocol.session import (
    HELLO_BURST,
    HELLO_EVERY,
    HelloReceived,
    Session,
    State,
    UnexpectedFrame,
)
from exchange.trust import keys
from exchange.trustcore.peers import MAX_JUDGED, PeerTrust
from tests.test_peer_trust import MOI, NOW, Pki, T
from tests.test_peer_trust import pki as pki

HELLO = encode_frame(0, FrameKind.HELLO, hello_meta("PS/GOV/X/ss1", [], {}))


@pytest.mark.parametrize("role", ["provider", "consumer"])
def test_a_hello_flood_refuses_the_connection(role: str) -> None:
    session = Session("provider" if role == "provider" else "consumer", 4096)
    opened = list(session.receive_data(HELLO, now=100.0))
    assert [type(e) for e in opened] == [HelloReceived] and session.state is State.OPEN
    events = list(session.receive_data(HELLO * HELLO_BURST, now=100.0))
    assert len(events) == HELLO_BURST
    with pytest.raises(UnexpectedFrame, match="too many HELLO frames"):
        list(session.receive_data(HELLO, now=100.0))
    assert session.state is State.ERROR


def test_hellos_within_the_budget_are_taken_for_good() -> None:
    """A server re-staples every connection when its OCSP responses change and when its keys are
    reloaded: one HELLO in a while, for as long as the connection lasts."""
    session = Session("provider", 4096)
    now = 0.0
    list(session.receive_data(HELLO, now=now))
    for _ in range(10 * HELLO_BURST):
        now += HELLO_EVERY
        assert len(list(session.receive_data(HELLO, now=now))) == 1
    assert len(list(session.receive_data(HELLO * (HELLO_BURST - 1), now=now))) == HELLO_BURST - 1
    assert session.state is State.OPEN


def test_a_clock_going_back_gives_no_extra_hellos() -> None:
    session = Session("provider", 4096)
    list(session.receive_data(HELLO + HELLO * HELLO_BURST, now=1000.0))
    with pytest.raises(UnexpectedFrame):
        list(session.receive_data(HELLO, now=10.0))


def test_hellos_of_ever_new_junk_certificates_leave_the_peer_trust_bounded(pki: Pki) -> None:
    """Certificates a peer presents once each (a foreign CA's, under a member's name): the peer
    trust remembers a bounded number, and none of the HELLOs they came in stays alive (before:
    each refusal was kept with its traceback, which held the HELLO)."""
    trust = PeerTrust(pki.conf(ocsp=False))
    junk = [
        pki.foreign.issue_sign_cert(keys.generate_key().public_key(), MOI, now=NOW).public_bytes(
            serialization.Encoding.DER
        )
        for _ in range(2 * MAX_JUDGED)
    ]
    hellos = []
    for start in range(0, len(junk), 32):
        # each HELLO's certificates as the session decodes them
        certs = tuple(x509.load_der_x509_certificate(der) for der in junk[start : start + 32])
        staples = Staples()
        hellos.append(weakref.ref(staples))
        admitted = trust.admit(pki.moi_auth, Hello(certs, staples), T, "provider")
        assert not admitted.signers and len(admitted.refused) == len(certs)
    del admitted, staples
    gc.collect()
    assert trust.judged <= MAX_JUDGED
    assert not [hello for hello in hellos if hello() is not None], "HELLOs kept alive"


class Staples(dict[str, bytes]):
    """A HELLO's staples, in a type a weak reference can watch."""


def test_a_refusal_holds_nothing_of_the_request_it_refused(pki: Pki) -> None:
    """A request signed with a refused certificate, again and again on one connection: nothing
    of each request stays alive after its refusal, and each refusal has its own detail id (the
    one the operator's log line carries)."""

    class Body(bytearray):
        pass

    trust = PeerTrust(pki.conf())
    peer = trust.admit(pki.moi_auth, pki.hello(pki.foreign_sign), T, "provider")
    thumb = cert_thumbprint(pki.foreign_sign)

    def request(body: Body) -> ExchangeError:
        try:
            peer.key_for(thumb, T)
        except ExchangeError as err:
            return err
        raise AssertionError("signed with a refused certificate, accepted")

    details = set()
    for _ in range(3):
        body = Body(b"x" * 1024)
        alive = weakref.ref(body)
        err = request(body)
        assert err.code == "Server.ServerProxy.InvalidSignatureValue"
        details.add(err.detail)
        del body, err
        gc.collect()
        assert alive() is None, "a refused request is kept alive by the stored refusal"
    assert len(details) == 3


def test_a_refused_certificate_presented_again_holds_nothing_of_the_hello(pki: Pki) -> None:
    """The same refused certificate in HELLO after HELLO: the peer trust's memory of it keeps
    none of those HELLOs alive."""
    trust = PeerTrust(pki.conf())
    staple = pki.hello(pki.foreign_sign).staples
    for _ in range(3):
        staples = Staples(staple)
        alive = weakref.ref(staples)
        admitted = trust.admit(pki.moi_auth, Hello((pki.foreign_sign,), staples), T, "provider")
        assert cert_thumbprint(pki.foreign_sign) in admitted.refused
        del staples, admitted
        gc.collect()
        assert alive() is None, "a HELLO is kept alive by the refusal of its certificate"


def test_a_staple_judged_before_is_judged_again_for_its_time(pki: Pki) -> None:
    """A staple that was fresh an hour ago is stale now, for the same peer trust as for a new
    one."""
    trust = PeerTrust(pki.conf())
    hello = pki.hello(pki.moi_sign)
    first = trust.admit(pki.moi_auth, hello, T, "provider")
    assert cert_thumbprint(pki.moi_sign) in first.signers
    again = trust.admit(pki.moi_auth, hello, T + 10, "provider")
    assert cert_thumbprint(pki.moi_sign) in again.signers
    later = (NOW + dt.timedelta(hours=2)).timestamp()
    with pytest.raises(ExchangeError, match="stale") as stale:
        trust.admit(pki.moi_auth, hello, later, "provider")
    assert stale.value.code == "Server.ServerProxy.OcspResponseStale"
    with pytest.raises(ExchangeError, match="stale"):
        PeerTrust(pki.conf()).admit(pki.moi_auth, hello, later, "provider")
