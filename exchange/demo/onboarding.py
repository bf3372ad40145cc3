"""Onboarding a ministry's security server, as its operator and the central operator would:

1. ``exchange server init`` wrote keys and CSRs (no CA at hand);
2. ``exchange ca token issue``: the CA's operator issues an enrolment token for the server's
   authentication certificate and its members' signing certificates;
3. ``exchange server request-certs``: the CSRs go to the CA service with the token,
   certificates come back;
4. ``exchange server register``: a registration request signed with the new authentication key
   and the member's signing key goes to the central server, which verifies and queues it;
5. ``exchange central registration approve``: the central operator approves; the next global
   configuration includes the server, its address, fingerprint and clients.

The same library functions as those commands, called in this process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import aiohttp

from exchange.central.registration import RegistrationStore
from exchange.central.registry import Registry
from exchange.cli.registration import build_registration, submit_registration
from exchange.errors import ConfigurationError
from exchange.server.config import load_server_config
from exchange.trust.ca_service import request_certificate
from exchange.trust.enrolment import EnrolmentStore, Identifier
from exchange.trust.keys import save_certificate
from exchange.trust.profiles import ProfileName


def issue_token(ca_dir: Path, config_path: Path) -> str:
    """The CA's operator issues the enrolment token of one server's onboarding: its
    authentication certificate and its members' signing certificates."""
    config = load_server_config(config_path)
    grants: list[tuple[ProfileName, Identifier]] = [("auth", config.server_id)]
    grants += [("sign", signing.member) for signing in config.signing]
    with EnrolmentStore.of_ca_dir(ca_dir) as store:
        issued = store.issue(grants, now=dt.datetime.now(dt.UTC), note="example federation")
    return issued.text


async def onboard(config_path: Path, ca_url: str, central_url: str, token: str) -> str:
    """Certificates from the CA service against ``token``, then a registration request; its
    id."""
    config = load_server_config(config_path)
    auth_csr = config.auth_cert.with_name(config.auth_cert.name.replace(".cert.pem", ".csr.pem"))
    cert = await request_certificate(
        ca_url, "auth", config.server_id, auth_csr.read_bytes(), token=token
    )
    save_certificate(config.auth_cert, cert)
    for signing in config.signing:
        csr = signing.cert.with_name(signing.cert.name.replace(".cert.pem", ".csr.pem"))
        cert = await request_certificate(
            ca_url, "sign", signing.member, csr.read_bytes(), token=token
        )
        save_certificate(signing.cert, cert)
    _, body = build_registration(config, None, None, int(time.time()))
    answer = await submit_registration(central_url, body)
    return str(answer["id"])


def approve_all(central_db: Path) -> int:
    """The central operator approves every pending request; the registry version after."""
    with RegistrationStore.open(central_db) as store, Registry.open(central_db) as registry:
        for request in store.requests():
            store.approve(request.id, registry, int(time.time()))
        return registry.version()


async def wait_for_version(url: str, version: int, timeout: float = 30.0) -> None:
    """Until the central server publishes a configuration of at least ``version``."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as response:
                published = int(response.headers.get("X-Exchange-GlobalConf-Version", "0"))
            if published >= version:
                return
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the central server did not publish version {version} in {timeout:g} s"
                )
            await asyncio.sleep(0.1)
