"""``exchange ca token issue | list | revoke``: the enrolment tokens the CA service asks for.

The CA's operator issues a token for the certificates one onboarding needs (an authentication
certificate for a security server, signing certificates for members) and hands it to that
server's operator out of band, who runs ``exchange server request-certs --token-file``. The
token's secret is printed (or written to ``--out``) once; the CA directory keeps its hash.
The work is done by ``exchange.trust.enrolment``; these commands read files and print.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from exchange.cli.ca import group as ca_group
from exchange.cli.common import console, print_json, reports
from exchange.durable import durable_replace, new_file
from exchange.errors import ConfigurationError, InvalidIdentifier
from exchange.identifiers import parse_member, parse_security_server
from exchange.trust.enrolment import (
    DEFAULT_VALIDITY,
    EnrolmentStore,
    Identifier,
    TokenInfo,
)
from exchange.trust.profiles import ProfileName

_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_NEW_FILE = click.Path(dir_okay=False, path_type=Path)
_UNITS = {"m": 60, "h": 3600, "d": 86400}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@ca_group.group("token")
def group() -> None:
    """Enrolment tokens: the proof the CA service asks for before it issues a certificate."""


def _validity(ctx: click.Context, param: click.Parameter, value: str) -> dt.timedelta:
    unit, number = value[-1:], value[:-1]
    if unit not in _UNITS or not number.isdigit() or int(number) < 1:
        raise click.BadParameter(f"{value!r} is not a duration like 30m, 12h or 3d")
    return dt.timedelta(seconds=int(number) * _UNITS[unit])


def _grants(
    servers: tuple[str, ...], members: tuple[str, ...]
) -> list[tuple[ProfileName, Identifier]]:
    grants: list[tuple[ProfileName, Identifier]] = []
    try:
        grants += [("auth", parse_security_server(s)) for s in servers]
    except InvalidIdentifier as exc:
        raise click.BadParameter(exc.message, param_hint="--auth") from None
    try:
        grants += [("sign", parse_member(m)) for m in members]
    except InvalidIdentifier as exc:
        raise click.BadParameter(exc.message, param_hint="--sign") from None
    if not grants:
        raise click.UsageError("give --auth SERVER and/or --sign MEMBER: what the token is for")
    return grants


@group.command("issue")
@click.option("--ca-dir", type=_EXISTING_DIR, required=True, help="Directory of the CA.")
@click.option(
    "--auth",
    "servers",
    multiple=True,
    help="An authentication certificate for this security server INSTANCE/CLASS/CODE/SERVER.",
)
@click.option(
    "--sign",
    "members",
    multiple=True,
    help="A signing certificate for this member INSTANCE/CLASS/CODE (repeatable).",
)
@click.option(
    "--valid",
    "valid_for",
    default=f"{DEFAULT_VALIDITY.days}d",
    show_default=True,
    callback=_validity,
    help="How long the token may be used (30m, 12h, 3d; at most 30d).",
)
@click.option("--note", default="", help="Who it is for (shown by 'ca token list').")
@click.option("--out", "out_file", type=_NEW_FILE, help="Write the token to this new file (0600).")
@reports
def issue(
    ca_dir: Path,
    servers: tuple[str, ...],
    members: tuple[str, ...],
    valid_for: dt.timedelta,
    note: str,
    out_file: Path | None,
    as_json: bool,
) -> None:
    """Issue an enrolment token for the certificates one onboarding needs.

    Each certificate named can be issued once, for one key, until the token expires or is
    revoked. Give the token to that server's operator over a channel you trust; it is shown
    only now (the CA directory keeps its hash).

    \b
    Example:
      exchange ca token issue --ca-dir ca --auth PS/GOV/MOI/ss1 --sign PS/GOV/MOI \\
          --note "Interior, ticket 4711" --out moi.token
    """
    if out_file is not None and out_file.exists():
        raise ConfigurationError(f"{out_file} already exists: remove it or choose another path")
    grants = _grants(servers, members)
    with EnrolmentStore.of_ca_dir(ca_dir) as store:
        issued = store.issue(grants, now=_now(), valid_for=valid_for, note=note)
    if out_file is not None:
        _write_secret(out_file, issued.text)
    shown = {**_describe(issued.info, _now())}
    if out_file is None:
        shown["token"] = issued.text
    else:
        shown["token_file"] = str(out_file)
    if as_json:
        print_json(shown)
        return
    _print_token(issued.info, _now())
    if out_file is None:
        console.print(f"token: {issued.text}")
    else:
        console.print(f"token written to {out_file}")
    console.print(
        "next: the server's operator runs 'exchange server request-certs --config server.toml "
        "--ca-url CA_URL --token-file FILE'"
    )


def _write_secret(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with new_file(tmp) as out:
        out.write(text.encode("ascii") + b"\n")
    durable_replace(tmp, path)


def _describe(info: TokenInfo, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": info.id,
        "state": info.state(now),
        "created_at": info.created_at.isoformat(),
        "expires_at": info.expires_at.isoformat(),
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
        "note": info.note,
        "grants": [
            {
                "profile": g.profile,
                "identifier": g.identifier,
                "used_at": g.used_at.isoformat() if g.used_at else None,
                "serial": g.serial,
            }
            for g in info.grants
        ],
    }


def _print_token(info: TokenInfo, now: dt.datetime) -> None:
    note = f"  ({info.note})" if info.note else ""
    console.print(
        f"{info.id}  {info.state(now)}  expires {info.expires_at:%Y-%m-%d %H:%M} UTC{note}"
    )
    for grant in info.grants:
        used = (
            f"used {grant.used_at:%Y-%m-%d %H:%M} UTC, serial {grant.serial}"
            if grant.used_at
            else "unused"
        )
        console.print(f"  {grant.title}: {used}")


@group.command("list")
@click.option("--ca-dir", type=_EXISTING_DIR, required=True, help="Directory of the CA.")
@reports
def list_tokens(ca_dir: Path, as_json: bool) -> None:
    """List the enrolment tokens (never their secrets), their state and what each was used for.

    \b
    Example:
      exchange ca token list --ca-dir ca
    """
    with EnrolmentStore.of_ca_dir(ca_dir) as store:
        tokens = store.tokens()
    now = _now()
    if as_json:
        print_json([_describe(t, now) for t in tokens])
        return
    if not tokens:
        console.print("no enrolment tokens (issue one with 'exchange ca token issue')")
    for info in tokens:
        _print_token(info, now)


@group.command("revoke")
@click.option("--ca-dir", type=_EXISTING_DIR, required=True, help="Directory of the CA.")
@click.argument("token_id")
@reports
def revoke(ca_dir: Path, token_id: str, as_json: bool) -> None:
    """Revoke an enrolment token by its id: what it has not yet been used for, it never will.

    Certificates already issued against it stay valid; revoke those with 'exchange ca revoke'.

    \b
    Example:
      exchange ca token revoke --ca-dir ca 3f9a0c2b7d14e865
    """
    with EnrolmentStore.of_ca_dir(ca_dir, create=False) as store:
        info = store.revoke(token_id, now=_now())
    if as_json:
        print_json(_describe(info, _now()))
        return
    console.print(f"revoked enrolment token {info.id}")
    for grant in info.grants:
        if grant.used_at is not None:
            console.print(
                f"  already issued: {grant.title} (serial {grant.serial}); "
                "revoke it with 'exchange ca revoke' if it must not be used"
            )
