"""Building and running the example federation (instance ``PS``).

Set-up happens in this process with the same library functions the ``exchange`` commands use:
a CA, the central server's directory and registry, Interior's population registry, and one
security server directory per ministry, each registered at the central server with its address,
authentication certificate fingerprint and hosted subsystems. Running starts the central
server, the adapter and every security server as their own processes on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from exchange.central.registry import Registry
from exchange.central.setup import init_central
from exchange.demo.onboarding import approve_all, issue_token, onboard, wait_for_version
from exchange.demo.processes import Child, free_port, spawn
from exchange.demo.services import (
    ADAPTERS,
    INSURANCE,
    PAYMENTS,
    REGISTRY,
    SIMS,
    AdapterSpec,
    MinistryServices,
)
from exchange.demo.window import WindowSite, build_window
from exchange.identifiers import (
    MemberId,
    SecurityServerId,
    SubsystemId,
    parse_member,
)
from exchange.server.setup import init_server
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import cert_pem, load_certificate
from exchange.trust.revocation import REVOCATIONS_FILE

INSTANCE = "PS"


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[str, int], None]]:
    from rich import get_console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        transient=True,
        disable=not enabled or not get_console().is_terminal,  # a pipe would keep an empty line
    ) as bar:
        task = bar.add_task("generating people", total=total)

        def update(phase: str, done: int) -> None:
            bar.update(task, completed=done, description=f"generating people ({phase})")

        yield update


POLICY_PACKAGE = "exchange.demo"
"""The example federation's access policies ship as this package's data, under ``policies/``."""


def copy_example_policies(target: Path) -> None:
    """Copy the packaged example policies (``policies/<MEMBER CODE>/*.toml``) into ``target``."""
    _copy_tree(resources.files(POLICY_PACKAGE) / "policies", target)


def _copy_tree(source: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_dir():
            _copy_tree(item, target / item.name)
        elif item.name.endswith(".toml"):
            (target / item.name).write_bytes(item.read_bytes())


FINANCE_GRANT = """# Written by the example federation at set-up: Finance's data-sharing agreement
# for fee collection ended yesterday, so its requests are refused with
# ...AccessDenied.GrantExpired.
provider = "PS/GOV/MOI"

[[grant]]
id = "finance-fee-collection"
client = "PS/GOV/MOF/payments"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["GET"]
paths = ["/*"]
fields = ["national_id", "name_en", "address"]
purposes = ["fee-collection"]
valid_from = {start}
valid_until = {end}
"""


def _write_finance_grant(path: Path) -> None:
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = (today - dt.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (today - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(FINANCE_GRANT.replace("{start}", start).replace("{end}", end))


@dataclass(frozen=True, slots=True)
class Ministry:
    member: MemberId
    name: str
    subsystem_code: str
    """The subsystem the ministry calls other ministries' services as."""
    adapter: AdapterSpec | None = None
    """The adapter whose services the ministry provides, if any."""

    @property
    def subsystem(self) -> SubsystemId:
        return self.member.subsystem(self.subsystem_code)

    @property
    def hosted(self) -> tuple[SubsystemId, ...]:
        """The subsystems its security server hosts: the client one, the providing one."""
        provided = () if self.adapter is None else (self.adapter.subsystem,)
        return tuple(dict.fromkeys((self.subsystem, *provided)))

    @property
    def server(self) -> SecurityServerId:
        return self.member.security_server("ss1")


MINISTRIES: tuple[Ministry, ...] = (
    Ministry(parse_member("PS/GOV/MOI"), "Ministry of Interior", "population-registry", REGISTRY),
    Ministry(
        parse_member("PS/GOV/PALPOST"), "Palestine Post, one-stop service window", "unified-window"
    ),
    Ministry(parse_member("PS/GOV/MOH"), "Ministry of Health", "health-records", INSURANCE),
    Ministry(
        parse_member("PS/GOV/MTIT"), "Ministry of Telecommunications and IT", "e-services", SIMS
    ),
    Ministry(parse_member("PS/GOV/MOF"), "Ministry of Finance", "payments", PAYMENTS),
)
INTERIOR = MINISTRIES[0]
WINDOW = MINISTRIES[1]
PERSONS = INTERIOR.subsystem.service("persons")
GET_PERSON = INTERIOR.subsystem.service("getPerson")


@dataclass
class ServerSite:
    ministry: Ministry
    directory: Path
    config: Path
    consumer_port: int
    provider_port: int
    status_port: int
    auth_cert: Path
    sign_cert: Path


@dataclass
class Federation:
    state_dir: Path
    people: int = 20_000
    seed: int = 2019
    progress: bool = True
    ca: CertificateAuthority | None = None
    central_config: Path | None = None
    central_port: int = 0
    adapter_port: int = 0
    ocsp_port: int = 0
    ca_url: str = ""
    tsa_port: int = 0
    registry_db: Path | None = None
    sites: dict[MemberId, ServerSite] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    sample_search: tuple[str, str] = ("", "")
    """The first sample person's full Latin name and date of birth (a search that finds them)."""
    unknown_id: str = ""
    services: MinistryServices | None = None
    window: WindowSite | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def build(self, say: Callable[[str], None] = lambda _: None) -> None:
        """Create everything on disk (idempotent per fresh state directory)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority.create(self.state_dir / "ca", "PS Government Test CA")
        say(f"CA created: {self.state_dir / 'ca' / 'ca.cert.pem'}")
        self.central_port = free_port()
        self.adapter_port = free_port()
        self.ocsp_port = free_port()
        self.tsa_port = free_port()
        self._build_tsa()
        central = init_central(self.state_dir / "central", INSTANCE, port=self.central_port)
        self.central_config = self.state_dir / "central" / "central.toml"
        say(f"central server set up for instance {INSTANCE} (anchor {central.anchor_path})")
        self._build_registry(say)
        assert self.registry_db is not None
        ports = {spec.name: self.adapter_port if spec is REGISTRY else free_port()
                 for spec in ADAPTERS}  # fmt: skip
        self.services = MinistryServices(self.state_dir / "services", self.registry_db, ports)
        self.services.build(self.ca)
        say(
            "the ministries' services set up: Health's insurance register, Telecom's SIM "
            "registry, Finance's fees; Interior's and Finance's document-signing keys certified"
        )
        policies = self.state_dir / "policies"
        copy_example_policies(policies)
        _write_finance_grant(policies / "MOI" / "finance.toml")
        for ministry in MINISTRIES:
            self._build_site(ministry, central.anchor_path, policies)
        self._register(central.db_path)
        self.window = build_window(self.state_dir / "window")
        say(f"the post office's window set up, with a clerk account ({self.window.username})")
        self.trust_bundle.write_text(
            cert_pem(self.ca.cert) + cert_pem(load_certificate(self.tsa_cert_path))
        )
        say(f"{len(MINISTRIES)} security servers set up: keys and certificate requests (CSRs)")

    def _build_tsa(self) -> None:
        """The time-stamping authority's key (0600) and certificate (EKU timeStamping, critical)."""
        from exchange.cli.tsa import CERT_FILE, KEY_FILE
        from exchange.trust.keys import generate_key, save_certificate, save_private_key
        from exchange.trust.timestamp import issue_tsa_cert

        assert self.ca is not None
        key = generate_key()
        tsa_dir = self.state_dir / "tsa"
        save_private_key(tsa_dir / KEY_FILE, key)
        save_certificate(tsa_dir / CERT_FILE, issue_tsa_cert(self.ca, key.public_key(), "PS TSA"))

    @property
    def tsa_cert_path(self) -> Path:
        return self.state_dir / "tsa" / "tsa.cert.pem"

    @property
    def trust_bundle(self) -> Path:
        """The approved CA and TSA certificates, PEM: what an auditor needs to verify."""
        return self.state_dir / "trust-bundle.pem"

    @property
    def tsa_url(self) -> str:
        return f"http://127.0.0.1:{self.tsa_port}/"

    def _build_registry(self, say: Callable[[str], None]) -> None:
        from adapters.population.generator import make_national_id
        from adapters.population.store import PopulationStore, build_registry

        self.registry_db = self.state_dir / "population" / "registry.sqlite"
        self.registry_db.parent.mkdir(parents=True, exist_ok=True)
        with _progress(self.progress, self.people) as on_progress:
            report = build_registry(
                self.registry_db, self.people, seed=self.seed, on_progress=on_progress, replace=True
            )
        with PopulationStore(self.registry_db) as store:
            people = store.sample(5, locality="Biddu") or store.sample(5)
            self.unknown_id = next(
                make_national_id(n)
                for n in range(10_000_000, 99_999_999, 7919)
                if store.get_person(make_national_id(n)) is None
            )
        self.sample_ids = [p["national_id"] for p in people]
        self.sample_search = (people[0]["name_en"]["full"], people[0]["date_of_birth"])
        say(f"population registry generated: {report.count:,} people in {report.seconds:.1f} s")

    def _build_site(self, ministry: Ministry, anchor: Path, policies: Path) -> None:
        assert self.ca is not None and self.services is not None
        directory = self.state_dir / "servers" / ministry.member.member_code
        consumer_port, provider_port, status_port = free_port(), free_port(), free_port()
        provides = ministry.adapter is not None
        result = init_server(
            directory,
            ministry.server,
            anchor,
            clients=list(ministry.hosted),
            ca=None,  # CSRs: the certificates come from the CA service when the ministry onboards
            consumer_port=consumer_port,
            provider_port=provider_port,
            status_port=status_port,
            policy_dir=policies / ministry.member.member_code if provides else None,
            extra=(
                {"services": self.services.declarations(ministry.adapter)}
                if ministry.adapter is not None
                else None
            ),
        )
        self.sites[ministry.member] = ServerSite(
            ministry=ministry,
            directory=directory,
            config=result.config,
            consumer_port=consumer_port,
            provider_port=provider_port,
            status_port=status_port,
            auth_cert=result.auth_cert,
            sign_cert=result.signing_certs[ministry.member],
        )

    def _register(self, db_path: Path) -> None:
        assert self.ca is not None
        with Registry.open(db_path) as registry:
            registry.add_ca("PS Government Test CA", cert_pem(self.ca.cert), [self.ocsp_url])
            registry.add_tsa("PS TSA", self.tsa_url, cert_pem(load_certificate(self.tsa_cert_path)))
            for ministry in MINISTRIES:
                registry.add_member(ministry.member, ministry.name)
                for subsystem in ministry.hosted:
                    registry.add_subsystem(subsystem)

    # -- running --------------------------------------------------------------------------------

    async def start(self, say: Callable[[str], None] = lambda _: None) -> None:
        logs = self.state_dir / "logs"
        assert self.central_config is not None and self.registry_db is not None
        try:
            self.children.append(
                await spawn(
                    "central",
                    [
                        "exchange",
                        "central",
                        "run",
                        "--config",
                        str(self.central_config),
                        "--ready-line",
                    ],
                    logs,
                )
            )
            say(f"central server serving on http://127.0.0.1:{self.central_port}")
            ca_dir = self.state_dir / "ca"
            ocsp_args = ["exchange", "ocsp", "serve", "--ca-dir", str(ca_dir)]
            ocsp_args += ["--db", str(ca_dir / REVOCATIONS_FILE), "--port", str(self.ocsp_port)]
            self.children.append(await spawn("ocsp", [*ocsp_args, "--ready-line"], logs))
            say(f"OCSP responder of the CA serving on {self.ocsp_url}")
            tsa_args = ["exchange", "tsa", "serve", "--dir", str(self.state_dir / "tsa")]
            tsa_args += ["--port", str(self.tsa_port), "--ready-line"]
            self.children.append(await spawn("tsa", tsa_args, logs))
            say(f"time-stamping authority (RFC 3161) serving on {self.tsa_url}")
            ca_args = ["exchange", "ca", "serve", "--ca-dir", str(ca_dir), "--port", "0"]
            ca_child = await spawn("ca", [*ca_args, "--ready-line"], logs)
            self.children.append(ca_child)
            self.ca_url = str(ca_child.ready["url"])
            say(f"CA service (certificates from CSRs) serving on {self.ca_url}")
            await self._onboard_all(say)
            assert self.services is not None
            await self._spawn_all(
                [(spec.name, self.services.command(spec)) for spec in ADAPTERS], logs
            )
            say(
                "the ministries' adapters serving: "
                + ", ".join(f"{spec.name} {self.services.url(spec)}" for spec in ADAPTERS)
            )
            await self._spawn_all(
                [
                    (f"ss-{m.member_code}",
                     ["exchange", "server", "run", "--config", str(site.config), "--ready-line"])
                    for m, site in self.sites.items()
                ],
                logs,
            )  # fmt: skip
            say(f"{len(self.sites)} security servers serving")
            assert self.window is not None
            consumer = self.consumer_url(WINDOW.member)
            window = await spawn("window", self.window.command(consumer), logs)
            self.children.append(window)
            self.window.url = str(window.ready["url"])
            say(f"the post office's window serving on {self.window.url} (its way out: {consumer})")
        except BaseException:
            await self.stop()
            raise

    async def _spawn_all(self, commands: list[tuple[str, list[str]]], logs: Path) -> None:
        """Start the processes at once; every one that started is the federation's to stop."""
        results = await asyncio.gather(
            *(spawn(name, args, logs) for name, args in commands), return_exceptions=True
        )
        self.children.extend(result for result in results if isinstance(result, Child))
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def stop(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                await child.stop()
        self.children.clear()

    # -- description ----------------------------------------------------------------------------

    @property
    def ocsp_url(self) -> str:
        return f"http://127.0.0.1:{self.ocsp_port}/"

    async def _onboard_all(self, say: Callable[[str], None]) -> None:
        """Each ministry as its operator would: an enrolment token from the CA's operator,
        certificates from CSRs via the CA service against it, a signed registration request to
        the central server, approval by the central operator."""
        assert self.central_config is not None
        central_url = f"http://127.0.0.1:{self.central_port}"
        for site in self.sites.values():
            token = issue_token(self.state_dir / "ca", site.config)
            await onboard(site.config, self.ca_url, central_url, token)
        version = approve_all(self.state_dir / "central" / "central.db")
        await wait_for_version(f"http://127.0.0.1:{self.central_port}/globalconf", version)
        say(
            f"{len(self.sites)} ministries onboarded: certificates issued from CSRs against "
            "enrolment tokens, registration requests verified and approved (global "
            f"configuration version {version})"
        )

    def consumer_url(self, member: MemberId) -> str:
        return f"http://127.0.0.1:{self.sites[member].consumer_port}"

    def status_url(self, member: MemberId) -> str:
        """The base of the server's ``/health`` and ``/metrics`` (its status listener)."""
        return f"http://127.0.0.1:{self.sites[member].status_port}"

    def endpoints(self) -> dict[str, Any]:
        return {
            "instance": INSTANCE,
            "central": {
                "url": f"http://127.0.0.1:{self.central_port}",
                "config": str(self.central_config),
            },
            "servers": {
                str(m): {
                    "consumer_url": self.consumer_url(m),
                    "provider_url": f"https://127.0.0.1:{site.provider_port}",
                    "status_url": self.status_url(m),
                    "state_dir": str(site.directory),
                    "config": str(site.config),
                    "client": str(site.ministry.subsystem),
                    "auth_cert": str(site.auth_cert),
                    "sign_cert": str(site.sign_cert),
                }
                for m, site in self.sites.items()
            },
            "adapters": self.services.endpoints() if self.services is not None else {},
            "sample_national_ids": self.sample_ids,
            "window": self.window.endpoints() if self.window is not None else None,
            "trust": {
                "ca_url": self.ca_url,
                "ca_config": str(self.state_dir / "ca"),
                "ocsp_url": self.ocsp_url,
                "tsa_url": self.tsa_url,
                "tsa_cert": str(self.tsa_cert_path),
                "ca_dir": str(self.state_dir / "ca"),
                "trust_bundle": str(self.trust_bundle),
            },
            "ca_cert": str(self.state_dir / "ca" / "ca.cert.pem"),
        }

    def write_endpoints(self) -> Path:
        """Write ``endpoints.json`` whole (a program waiting for it never reads half of it)."""
        from exchange.durable import write_durably

        path = self.state_dir / "endpoints.json"
        text = json.dumps(self.endpoints(), indent=2, ensure_ascii=False) + "\n"
        write_durably(path, text.encode("utf-8"))
        return path
