"""The ministries' services of the example federation: adapters, their data, their declarations.

Four adapters serve the post office's window (issue 15), each behind its ministry's security
server: Interior's population registry (``persons``, SOAP ``getPerson`` and signed
``residence-certificates``), Health's insurance status (``status``), Telecom's SIM registry
(``sims``) and Finance's payments (``schedule``, ``fees``, ``receipts``). At set-up their data
is made beside the registry and the document-signing keys of Interior and Finance are certified
by the federation's CA (member signing certificates of their own, not the security servers'
keys); at run time each adapter is its own process on 127.0.0.1, started with the same command
an operator would type.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from exchange.identifiers import SubsystemId, parse_subsystem
from exchange.trust.ca import CertificateAuthority

DOCUMENT_KEY: Final = "document.key.pem"
DOCUMENT_CHAIN: Final = "document.chain.pem"


@dataclass(frozen=True, slots=True)
class Service:
    """One service an adapter serves: its code, the adapter's path for it, its description."""

    code: str
    path: str
    title: str
    description: str = ""
    soap: bool = False


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """One ministry's adapter: the subsystem whose services it serves, and those services."""

    name: str
    subsystem: SubsystemId
    services: tuple[Service, ...]

    @property
    def member_code(self) -> str:
        return self.subsystem.member.member_code


REGISTRY: Final = AdapterSpec(
    "population-registry",
    parse_subsystem("PS/GOV/MOI/population-registry"),
    (
        Service("persons", "/persons", "Population registry: persons",
                "Civil records of residents: names, date of birth, family, address."),
        Service("getPerson", "/soap", "Population registry: getPerson (SOAP)", soap=True),
        Service("residence-certificates", "/residence-certificates",
                "Certificates of residence", "A signed certificate of where a resident lives."),
    ),
)  # fmt: skip
INSURANCE: Final = AdapterSpec(
    "health-insurance",
    parse_subsystem("PS/GOV/MOH/health-insurance"),
    (Service("status", "/status", "Health insurance status",
             "Whether a resident is insured, under which scheme, until when."),),
)  # fmt: skip
SIMS: Final = AdapterSpec(
    "sim-registry",
    parse_subsystem("PS/GOV/MTIT/sim-registry"),
    (Service("sims", "/sims", "SIM registry", "SIM cards and the residents they belong to."),),
)  # fmt: skip
PAYMENTS: Final = AdapterSpec(
    "payments",
    parse_subsystem("PS/GOV/MOF/payments"),
    (
        Service("schedule", "/schedule", "Fee schedule", "The fees Finance collects."),
        Service("fees", "/fees", "Fees", "Fees due for a service, and their payment."),
        Service("receipts", "/receipts", "Receipts", "Signed receipts, and their refunds."),
    ),
)  # fmt: skip
ADAPTERS: Final = (REGISTRY, INSURANCE, SIMS, PAYMENTS)
SIGNING_MEMBERS: Final = ("MOI", "MOF")
"""The ministries whose adapters sign documents (certificates of residence; receipts)."""


@dataclass
class MinistryServices:
    """The adapters of the example federation under ``root``, each on its own port."""

    root: Path
    registry_db: Path
    ports: dict[str, int] = field(default_factory=dict)

    def file(self, member_code: str, name: str) -> Path:
        return self.root / member_code / name

    def url(self, spec: AdapterSpec) -> str:
        return f"http://127.0.0.1:{self.ports[spec.name]}"

    # -- set-up ---------------------------------------------------------------------------------

    def build(self, ca: CertificateAuthority) -> None:
        """The adapters' data, and Interior's and Finance's document-signing keys."""
        from adapters.health.insurance_store import generate, read_residents
        from adapters.payments.store import create_store as create_payments
        from adapters.population.certificates import create_certificate_store
        from adapters.telecom.store import create_store as create_sims

        for code in SIGNING_MEMBERS:
            self._document_key(ca, code)
        create_certificate_store(self.file("MOI", "certificates.sqlite"))
        residents = read_residents(self.registry_db)
        self.file("MOH", "").mkdir(parents=True, exist_ok=True)
        generate(self.file("MOH", "insurance.sqlite"), residents, today=dt.date.today())
        create_sims(self.file("MTIT", "sims.sqlite"))
        create_payments(self.file("MOF", "payments.sqlite"))

    def _document_key(self, ca: CertificateAuthority, member_code: str) -> None:
        """A key of the ministry's adapter (0600) and its member signing certificate."""
        from exchange.identifiers import parse_member
        from exchange.trust.keys import generate_key, save_certificate, save_private_key

        key = generate_key()
        member = parse_member(f"PS/GOV/{member_code}")
        save_private_key(self.file(member_code, DOCUMENT_KEY), key)
        cert = ca.issue_sign_cert(key.public_key(), member)
        save_certificate(self.file(member_code, DOCUMENT_CHAIN), cert, ca.cert)

    # -- what the security servers declare -------------------------------------------------------

    def declarations(self, spec: AdapterSpec) -> list[dict[str, str]]:
        """The ``[[services]]`` of ``spec``'s subsystem in its ministry's ``server.toml``."""
        base = self.url(spec)
        declared = []
        for service in spec.services:
            entry = {
                "id": str(spec.subsystem.service(service.code)),
                "url": base + service.path,
                "type": "soap" if service.soap else "rest",
                "title": service.title,
            }
            if service.description:
                entry["description"] = service.description
            if service.soap:
                entry["wsdl_url"] = f"{base}{service.path}?wsdl"
            else:
                entry["openapi_url"] = f"{base}/openapi.json"
            declared.append(entry)
        return declared

    # -- running --------------------------------------------------------------------------------

    def command(self, spec: AdapterSpec) -> list[str]:
        """``python -m`` arguments that serve ``spec`` on its port (as an operator would)."""
        port = ["--host", "127.0.0.1", "--port", str(self.ports[spec.name])]
        keys = ["--signing-key", str(self.file(spec.member_code, DOCUMENT_KEY)),
                "--signing-chain", str(self.file(spec.member_code, DOCUMENT_CHAIN))]  # fmt: skip
        if spec is REGISTRY:
            certificates = ["--certificates-db", str(self.file("MOI", "certificates.sqlite"))]
            db = ["--db", str(self.registry_db)]
            return ["adapters.population", "serve", *db, *port, *certificates, *keys]
        if spec is INSURANCE:
            db = ["--db", str(self.file("MOH", "insurance.sqlite"))]
            return ["adapters.health", "insurance", "serve", *db, *port]
        if spec is SIMS:
            db = ["--db", str(self.file("MTIT", "sims.sqlite"))]
            return ["adapters.telecom", "serve", *db, *port]
        db = ["--db", str(self.file("MOF", "payments.sqlite"))]
        return ["adapters.payments", "serve", *db, *keys, *port]

    def endpoints(self) -> dict[str, Any]:
        """Each service's id and where its adapter serves it, for ``endpoints.json``."""
        return {
            entry["id"]: {k: v for k, v in entry.items() if k != "id"}
            for spec in ADAPTERS
            for entry in self.declarations(spec)
        }
