"""Terminal output shows logged and peer-supplied text, never obeys it (issue 13, finding 5).

A message log written before the field rules (or by an insider with the file) holds fields with
escape sequences, C1 controls, U+2028 and bidirectional overrides. ``exchange log show`` printed
them raw: the operator's screen was cleared, a link planted, a line forged. Every way the CLI
prints (rich consoles, ``echo``, JSON, a serving command's log lines) goes through
:mod:`exchange.terminal`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from exchange.cli.common import console, err_console, handle_errors, print_json, reports
from exchange.cli.log import group as log_group
from exchange.errors import ExchangeError
from exchange.identifiers import SecurityServerId
from exchange.messagelog.store import MessageLog
from exchange.oplog import LogSettings, formatter_for
from exchange.protocol.jws import Signer
from exchange.protocol.syntax import LAYOUT_CONTROLS
from exchange.terminal import json_text, one_value, printable
from exchange.trust.keys import generate_key, self_signed_certificate

ACTED_ON = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff{LAYOUT_CONTROLS}]")
"""What a terminal acts on, or what changes how the text around it shows (tab, line feed apart)."""

HOSTILE = {
    "message_id": "m-1\x1b[2J\x1b[H",
    "client": "PS/GOV/MOF/tax\x9b31m",
    "user_id": "clerk\u2028#2  2026-01-01  provider  200 ok",
    "purpose": "care\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07",
    "service": "PS/GOV/MOI/population-registry/\u202epersons",
    "side": "consumer",
    "status": "ok\x7f",
    "error": {"type": "Server.X\r\n#2  2026-01-01  provider  200 ok", "message": "m"},
    "http_status": 200,
    "method": "G\x1bET",
    "path": "/family\x1b]0;owned\x07",
}


def _dangerous(text: str) -> list[str]:
    return ACTED_ON.findall(text)


async def _write(path: Path, entry: dict[str, Any]) -> None:
    key = generate_key()
    signer = Signer(key, self_signed_certificate(key, "test signing"))
    with MessageLog(path, signer, owner=SecurityServerId("PS", "GOV", "MOI", "ss1")) as log:
        await log.append(entry)


@pytest.fixture
def hostile_log(tmp_path: Path) -> Path:
    path = tmp_path / "log.sqlite"
    asyncio.run(_write(path, HOSTILE))
    return path


@pytest.mark.parametrize("width", ["80", "200"], ids=["narrow", "wide"])
def test_log_show_prints_hostile_fields_as_visible_escapes(hostile_log: Path, width: str) -> None:
    result = CliRunner(env={"COLUMNS": width}).invoke(log_group, ["show", "--db", str(hostile_log)])
    assert result.exit_code == 0, result.output
    assert _dangerous(result.output) == [], repr(result.output)
    # what was there is shown, so that the operator sees it was tried
    for shown in ("\\x1b[2J", "\\x9b31m", "\\u202e", "\\x07click", "Server.X\\x0d\\x0a#2",
                  "/family\\x1b]0;owned\\x07", "G\\x1bET", "clerk\\u2028#2"):  # fmt: skip
        assert shown in result.output, shown


def test_log_show_json_is_the_same_json_shown_as_text(hostile_log: Path) -> None:
    result = CliRunner().invoke(log_group, ["show", "--db", str(hostile_log), "--json"])
    assert result.exit_code == 0, result.output
    assert _dangerous(result.output.replace("\n", "")) == []
    [record] = json.loads(result.output)
    assert {k: record["entry"][k] for k in HOSTILE} == HOSTILE


def test_an_error_message_from_a_peer_is_neither_markup_nor_escapes(capsys: Any) -> None:
    @handle_errors
    def fail() -> None:
        raise ExchangeError("refused [link=http://evil.example]here[/link] \x1b[31mred\x1b[0m")

    with pytest.raises(SystemExit) as exit_info:
        fail()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "[link=http://evil.example]here[/link]" in err
    assert "\\x1b[31mred" in err
    assert _dangerous(err) == [] and "\x1b]8" not in err


def test_under_json_a_peers_error_message_is_the_same_text_escaped(capsys: Any) -> None:
    message = "refused \x1b[2J\u202e \x85 [link=http://evil.example]here[/link]"

    @reports
    def fail(as_json: bool) -> None:
        raise ExchangeError(message)

    with pytest.raises(SystemExit) as exit_info:
        fail(as_json=True)
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert err == "" and _dangerous(out.replace("\n", "")) == []
    assert json.loads(out)["error"]["message"] == message


def test_consoles_escape_what_they_render(capsys: Any) -> None:
    console.print("a\x1b[2Jb \u2028 [bold]not markup[/bold]")
    err_console.print("c\x85d")
    out, err = capsys.readouterr()
    assert out == "a\\x1b[2Jb \\u2028 [bold]not markup[/bold]\n"
    assert err == "c\\x85d\n"


def test_print_json_keeps_the_value(capsys: Any) -> None:
    value = {"v": "a\x7f\x85\u2028\u202e\x1b b", "arabic": "أمل"}
    print_json(value)
    out = capsys.readouterr().out
    assert _dangerous(out.replace("\n", "")) == []
    assert json.loads(out) == value
    assert "أمل" in out


@pytest.mark.parametrize("form", ["text", "json"])
def test_server_log_lines_are_printable(form: str) -> None:
    record = logging.LogRecord(
        "exchange.server", logging.WARNING, __file__, 1, "refused %s", ("CN=\x1b[2J\x85",), None
    )
    record.message_id, record.message_id_text = None, ""  # as oplog's filter sets them
    line = formatter_for(LogSettings(format=form)).format(record)  # type: ignore[arg-type]
    assert _dangerous(line) == []
    if form == "text":
        assert line.endswith("WARNING exchange.server: refused CN=\\x1b[2J\\x85")
    else:
        assert json.loads(line)["message"] == "refused CN=\x1b[2J\x85"


@given(text=st.text())
def test_printable_leaves_only_layout_and_text(text: str) -> None:
    shown = printable(text)
    assert _dangerous(shown) == []
    if not _dangerous(text):
        assert shown == text


@given(text=st.text())
def test_one_value_is_one_line(text: str) -> None:
    shown = one_value(text)
    assert _dangerous(shown) == [] and "\n" not in shown and "\t" not in shown


@given(
    value=st.recursive(
        st.text(st.characters(exclude_categories=("Cs",))) | st.integers(-(2**63), 2**63 - 1),
        lambda v: st.lists(v, max_size=3),
    )
)
def test_json_text_is_the_same_json_value(value: Any) -> None:
    text = orjson.dumps(value).decode()
    shown = json_text(text)
    assert _dangerous(shown) == []
    assert orjson.loads(shown) == value
