"""``exchange ROLE check-config --config FILE`` for every role, and ``--config`` beside options.

``check-config`` reads a configuration file as the role's ``run``/``serve`` would, then checks that
the files it names as inputs exist (keys, certificates, the anchor, policy directory), and prints
every problem as ``file:line: key: what is wrong``: exit 0 when there is none, 2 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from click.core import ParameterSource

from exchange.cli.common import EXIT_USAGE, console, err_console, print_json, reports
from exchange.configfile import ConfigFileError, KeyLines, Loc, Problem, key_name, read_toml
from exchange.errors import ConfigurationError

COMMAND_LINE: Final = Path("(command line)")
"""The "file" of settings given as options; its relative paths are relative to the working
directory."""

T = TypeVar("T")
Inputs = Callable[[Any], Iterable[tuple[Loc, Path | None, str]]]
"""A role's input files in its configuration: ``(key, path, "file" | "directory")``."""


def reject_options_beside_config(ctx: click.Context, keep: Iterable[str] = ()) -> None:
    """``--config`` replaces the settings' options: giving both is a usage error."""
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name not in ("config_path", *keep)
        and ctx.get_parameter_source(param.name or "") is ParameterSource.COMMANDLINE
    ]
    if given:
        raise click.UsageError(
            f"--config replaces {', '.join(given)}: give the settings in the file or as options, "
            "not both"
        )


def settings_from_command_line(
    build: Callable[[dict[str, Any], Path, str | None], T],
    options: dict[str, Any],
    flags: dict[str, str] | None = None,
) -> T:
    """Settings given as options, keyed by the file's keys, checked by the same ``build`` as the
    file; a problem is a usage error naming the option (``flags`` maps keys to other names)."""
    doc = {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if v is not None}
    try:
        return build(doc, COMMAND_LINE, None)
    except ConfigFileError as exc:
        names = flags or {}
        raise click.UsageError(
            "; ".join(
                f"{names.get(p.key, '--' + p.key.replace('_', '-'))}: {p.message}"
                for p in exc.problems
            )
        ) from None


def missing_inputs(path: Path, config: Any, inputs: Inputs) -> list[Problem]:
    """Input files the configuration names that do not exist."""
    lines: KeyLines | None = None
    problems = []
    for loc, target, kind in inputs(config):
        if target is None:
            continue
        exists = target.is_dir() if kind == "directory" else target.is_file()
        if not exists:
            if lines is None:
                lines = KeyLines(read_toml(path)[0])
            problems.append(Problem(lines.line_of(loc), key_name(loc), f"no such {kind}: {target}"))
    return problems


def add_check_config(
    group: click.Group, load: Callable[[Path], Any], what: str, inputs: Inputs | None = None
) -> None:
    """Register ``check-config`` on ``group``: ``load`` reads the file, ``inputs`` lists what it
    names that must exist."""

    help_text = (
        f"Check a {what} configuration file without starting anything; exit 2 listing every "
        "problem as file:line: key: what is wrong.\n\n"
        f"\b\nExample:\n  exchange {group.name} check-config --config {_EXAMPLES[what]}"
    )

    @group.command("check-config", help=help_text)
    @click.option(
        "--config",
        "config_path",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"The {what} configuration file.",
    )
    @reports
    def check_config(config_path: Path, as_json: bool) -> None:
        problems = _problems(config_path, load, inputs)
        if as_json:
            found = [p.to_dict() for p in problems]
            print_json({"file": str(config_path), "ok": not problems, "problems": found})
        elif problems:
            for problem in problems:
                err_console.print(problem.render(config_path), markup=False, highlight=False)
        else:
            console.print(f"{config_path}: OK, a valid {what} configuration", markup=False)
        if problems:
            raise SystemExit(EXIT_USAGE)


_EXAMPLES: Final = {
    "security server": "ss-moi/server.toml",
    "central server": "central/central.toml",
    "CA service": "ca/ca.toml",
    "OCSP responder": "ca/ocsp.toml",
    "time-stamping authority": "tsa/tsa.toml",
    "population registry": "registry/registry.toml",
}


def _problems(path: Path, load: Callable[[Path], Any], inputs: Inputs | None) -> list[Problem]:
    try:
        config = load(path)
    except ConfigFileError as exc:
        return list(exc.problems)
    except ConfigurationError as exc:
        return [Problem(None, "", exc.message.removeprefix(f"{path}: "))]
    return missing_inputs(path, config, inputs) if inputs is not None else []
