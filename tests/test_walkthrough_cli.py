"""The commands the CLI tells its operator to run next work when typed as printed.

Found by following README.md's walk-throughs on a fresh clone: a "next:" line that names a flag
the command does not have sends the operator to a usage error in the middle of a key rotation.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from examples.window.cli import main as window_main
from exchange.central.registry import Registry
from exchange.central.setup import init_central
from exchange.cli import main
from exchange.cli.central import group as central_group
from exchange.cli.log import _progress as _log_progress
from exchange.cli.server import group as server_group
from exchange.demo.federation import _progress as _demo_progress
from exchange.identifiers import parse_member, parse_security_server, parse_subsystem
from exchange.server.config import load_server_config
from exchange.server.setup import init_server
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import fingerprint, load_certificate

SS1 = parse_security_server("PS/GOV/MOI/ss1")


def _printed_command(output: str, prefix: str) -> list[str]:
    """The arguments of the one printed line that starts with ``prefix`` (after the indent)."""
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith(prefix)]
    assert len(lines) == 1, output
    return shlex.split(lines[0].removeprefix(prefix))


def test_new_auth_names_the_add_auth_cert_command_as_it_is(tmp_path: Path) -> None:
    central = init_central(tmp_path / "central", "PS", port=0)
    ca = CertificateAuthority.create(tmp_path / "ca", "PS Test CA")
    server = init_server(
        tmp_path / "ss-moi",
        SS1,
        central.anchor_path,
        clients=[parse_subsystem("PS/GOV/MOI/population-registry")],
        ca=ca,
    )
    old = load_certificate(load_server_config(server.config).auth_cert)
    with Registry.open(central.db_path) as registry:
        registry.add_member(parse_member("PS/GOV/MOI"), "Ministry of Interior")
        registry.add_server(SS1, "127.0.0.1:4511", [fingerprint(old)])

    made = CliRunner().invoke(
        server_group,
        ["keys", "new-auth", "--config", str(server.config), "--ca-dir", str(tmp_path / "ca")],
    )
    assert made.exit_code == 0, made.output

    args = _printed_command(made.output, "exchange central server ")
    args[args.index("central.toml")] = str(tmp_path / "central" / "central.toml")
    added = CliRunner().invoke(central_group, ["server", *args])
    assert added.exit_code == 0, added.output
    with Registry.open(central.db_path) as registry:
        registered = registry.build_globalconf(int(time.time())).server(SS1)
    assert registered is not None and len(registered.auth_cert_fingerprints) == 2


def test_log_progress_bars_write_nothing_when_the_output_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `exchange log verify ... > report.txt` began the report with an empty line (the bar's
    # last refresh, which a terminal clears); the demo's summary had one after its second line
    with _log_progress("verifying", hidden=False) as bar:
        bar.update(bar.add_task("verifying", total=10), completed=10)
    assert capsys.readouterr().out == ""


def test_demo_progress_bar_writes_nothing_when_the_output_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _demo_progress(True, 10) as update:
        update("names", 10)
    assert capsys.readouterr().out == ""


# --- the commands of README.md and docs/, and the --help examples, exist as written ---------------
ROOT = Path(__file__).resolve().parent.parent
_SHELL_OPERATORS = frozenset({"|", "||", "&&", ";", ">", "&"})
_WINDOW = "python -m examples.window "
_COMMANDS = ("exchange ", _WINDOW)
_INLINE = r"`((?:exchange|python -m examples\.window) [^`]+)`"


def _readme_commands(text: str) -> list[tuple[int, str]]:
    """(line, command) of each ``exchange ...`` line of the code blocks (``$ `` prompts and ``\\``
    continuations followed) and of each inline ```exchange ...``` span."""
    found: list[tuple[int, str]] = []
    in_block = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            found += [(number, m) for m in re.findall(_INLINE, line)]
            continue
        source = line.strip().removeprefix("$ ").removeprefix(".venv/bin/")
        if pending is not None:
            start, source = pending[0], f"{pending[1]} {source}"
            pending = None
        elif source.startswith(_COMMANDS):
            start = number
        else:
            continue
        if source.endswith("\\"):
            pending = (start, source[:-1])
        else:
            found.append((start, source))
    return found


def _problems(command: str) -> list[str]:
    """What in ``command`` the ``exchange`` CLI (or the window's) does not have: a subcommand or
    an option."""
    cli = window_main if command.startswith(_WINDOW) else main
    tokens = shlex.split(re.sub(r"\s#.*$", "", command.removeprefix("python -m ")))
    for index, token in enumerate(tokens):
        if token in _SHELL_OPERATORS:
            tokens = tokens[:index]
            break
    current: click.Command = cli
    index = 1
    while isinstance(current, click.Group) and index < len(tokens):
        sub = current.commands.get(tokens[index])
        if sub is None:
            break
        current, index = sub, index + 1
    rest = tokens[index:]
    if isinstance(current, click.Group) and rest and rest[0][0] not in "-.…":
        return [f"{current.name} has no subcommand {rest[0]!r}"]
    options = {"--help", "-h"} | {o for p in current.params for o in (*p.opts, *p.secondary_opts)}
    return [
        f"{current.name} has no option {token.split('=')[0]}"
        for token in rest
        if token.startswith("--") and token.split("=")[0] not in options
    ]


def _help_examples(command: click.Command, path: str) -> Iterator[tuple[str, str]]:
    lines = [line.strip() for line in (command.help or "").splitlines()]
    source = ""
    for line in lines:
        if source:
            source = f"{source} {line}"
        elif line.startswith("exchange "):
            source = line
        else:
            continue
        if source.endswith("\\"):
            source = source[:-1]
        else:
            yield path, source
            source = ""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _help_examples(sub, f"{path} {name}")


def test_the_checks_find_a_wrong_flag_and_a_wrong_subcommand() -> None:
    text = "```sh\n$ exchange central server add-auth-cert --config c.toml PS/GOV/MOI/ss1 \\\n"
    text += "    --auth-cert new.pem\n```\nthen `exchange central servers list`\n"
    text += "```sh\npython -m examples.window serve --state-dir w --consumer-url u --tls\n```\n"
    text += "and `python -m examples.window add-clerks --state-dir w`\n"
    found = _readme_commands(text)
    assert [line for line, _ in found] == [2, 5, 7, 9]
    assert [_problems(command) for _, command in found] == [
        ["add-auth-cert has no option --auth-cert"],
        ["central has no subcommand 'servers'"],
        ["serve has no option --tls"],
        ["main has no subcommand 'add-clerks'"],
    ]


GUIDES = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))


@pytest.mark.parametrize("doc", GUIDES)
def test_documented_commands_exist_as_written(doc: str) -> None:
    commands = _readme_commands((ROOT / doc).read_text())
    if doc in ("README.md", "docs/operator.md"):
        assert len(commands) > 10, f"the commands of {doc} were not found"
    wrong = [f"{doc}:{n}: {p}: {c}" for n, c in commands for p in _problems(c)]
    assert wrong == []


def test_help_examples_exist_as_written() -> None:
    examples = list(_help_examples(main, "exchange"))
    assert len(examples) > 50, "the --help examples were not found"
    assert [f"{path}: {p}: {c}" for path, c in examples for p in _problems(c)] == []


# --- output into a pipe that closed early (`exchange ... | head -1`) ------------------------------
@pytest.mark.parametrize(
    "args",
    [["ca", "init", "--dir", "{tmp}/ca"], ["policy", "check", "exchange/demo/policies/MOI"]],
    ids=["click-echo", "rich-console"],
)
def test_a_reader_that_stops_early_is_no_error(tmp_path: Path, args: list[str]) -> None:
    """`exchange tsa verify ... | head -1` printed "error: [Errno 32] Broken pipe" and exited 2
    (usage error). Now it stops quietly, as a command killed by SIGPIPE would: 128 + 13."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "exchange", *(a.format(tmp=tmp_path) for a in args)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    finally:
        os.close(write_end)
    assert "Broken pipe" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 128 + signal.SIGPIPE, done.stderr
