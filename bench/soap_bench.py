"""SOAP (X-Road message protocol 4.0) costs on the security server's hot path, sans IO.

    python bench/soap_bench.py [--seconds 1]

Prints per-operation time for: parsing a request envelope (PR-MESS Annex E's shape, and one with
a 1 MiB body), finishing a response (echo + requestHash), filtering a response's fields, and
building a fault. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from lxml import etree

from exchange.identifiers import ServiceId, SubsystemId
from exchange.policy.xml_fields import filter_response_element
from exchange.protocol import soap

POP = "http://population.moi.gov.ps/v1"
HEADER = soap.XRoadHeader(
    client=SubsystemId("PS", "GOV", "PALPOST", "unified-window"),
    service=ServiceId("PS", "GOV", "MOI", "population-registry", "getPerson"),
    service_version="v1",
    message_id="8f0c6a36-2f0b-4d4e-9a51-3f4f1f2c9b10",
    user_id="PS-clerk-0042",
    issue="counter-7",
    protocol_version="4.0",
    represented_party=None,
    security_server=None,
    purpose="citizen-service",
)


def request(payload_bytes: int) -> bytes:
    body = etree.Element(f"{{{POP}}}getPerson")
    etree.SubElement(body, "nationalId").text = "410689996"
    if payload_bytes:
        etree.SubElement(body, "note").text = "x" * payload_bytes
    return soap.request_envelope(HEADER, body)


def response_for(envelope: bytes) -> bytes:
    root = etree.fromstring(envelope)
    body = root[1]
    body.remove(body[0])
    out = etree.SubElement(body, f"{{{POP}}}getPersonResponse")
    for name in ("national_id", "sex", "date_of_birth", "status", "marital_status"):
        etree.SubElement(out, name).text = "value"
    for group in ("name_ar", "name_en", "address"):
        sub = etree.SubElement(out, group)
        for name in ("first", "family", "full", "locality"):
            etree.SubElement(sub, name).text = "value"
    return etree.tostring(root)


def measure(label: str, op: Callable[[], object], seconds: float) -> None:
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        op()
        count += 1
    print(f"{label:<46} {elapsed / count * 1e6:10.1f} µs/op  ({count} ops)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    seconds = parser.parse_args().seconds
    small, large = request(0), request(2**20)
    parsed = soap.parse_request(small)
    answer = response_for(small)
    fields = ("national_id", "name_ar", "name_en", "address")
    print(
        f"request envelope: {len(small)} bytes; large: {len(large)} bytes; response: {len(answer)}"
    )
    measure("parse_request (Annex E shape)", lambda: soap.parse_request(small), seconds)
    measure("parse_request (1 MiB body)", lambda: soap.parse_request(large), seconds)
    measure(
        "parse_response + finish_response",
        lambda: soap.finish_response(soap.parse_response(answer), parsed),
        seconds,
    )
    measure(
        "parse_response + filter 4 fields",
        lambda: filter_response_element(soap.parse_response(answer).body, fields),
        seconds,
    )
    measure("fault_envelope", lambda: soap.fault_envelope("Client.InvalidXml", "x", "d"), seconds)


if __name__ == "__main__":
    main()
