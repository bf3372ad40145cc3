"""``exchange log show`` and ``log heads`` as an auditor uses them (issue 14, "tried as a new
auditor would"): find one clerk's exchanges of a day by user id, path and status; list the tree
heads a proof can lead to; stream a log of any size; refuse what they do not understand in one
line.

The logs are real SQLite files written by :class:`MessageLog` (signed tree heads, some
time-stamped by a real RFC 3161 token, some records archived); the integration test of the
complaint walk-through runs the same commands over logs written by real security servers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from exchange.cli.log import group
from exchange.messagelog.heads import HeadFilter, iter_heads
from exchange.messagelog.query import RecordFilter, iter_records, parse_status, parse_time
from exchange.messagelog.store import MessageLog
from tests.test_archive import OWNER, Clock, Pki, archive, build, pki  # noqa: F401

DAY = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
MORNING = DAY.timestamp() + 9 * 3600
CLERK, OTHER = "PS-clerk-biddu-01", "PS-clerk-biddu-02"
WINDOW = "PS/GOV/PALPOST/unified-window"
PERSONS = "PS/GOV/MOI/population-registry/persons"

# (user id, method, path, HTTP status, minutes after 09:00 on 6 December; -1440 is the day before)
EXCHANGES = [
    (CLERK, "GET", "/408728723", 200, 0),
    (CLERK, "GET", "/408728723/family", 403, 5),
    (OTHER, "GET", "/408728723/family", 403, 6),
    (CLERK, "GET", "/408728723/address", 200, 7),
    (CLERK, "GET", "/408728723/family", 403, -1440),
    (None, "GET", "/408728723/family", 403, 8),
    (CLERK, "POST", "/408728723/notes?lang=en", 201, 9),
    (CLERK, "GET", "/999999999", 404, 10),
    (CLERK, "GET", "/408728723/family", 502, 11),
]


def record(i: int) -> dict[str, Any]:
    user_id, method, path, status, _ = EXCHANGES[i]
    error = None if status < 500 and status != 403 else {"type": "Server.X", "message": "m"}
    return {
        "message_id": f"m-{i}",
        "client": WINDOW,
        "service": PERSONS,
        "side": "provider",
        "status": "error" if error else "ok",
        "error": error,
        "http_status": status,
        "method": method,
        "path": path,
        "user_id": user_id,
        "purpose": "citizen-service",
    }


@pytest.fixture
async def log(tmp_path: Path, pki: Pki) -> Path:  # noqa: F811
    """The exchanges above, one batch each (a signed tree head per record)."""
    path = tmp_path / "log.sqlite"
    order = sorted(range(len(EXCHANGES)), key=lambda i: EXCHANGES[i][4])
    clock = Clock(MORNING)
    with MessageLog(path, pki.signer, owner=OWNER, now=clock) as messagelog:
        for i in order:
            clock.at = MORNING + EXCHANGES[i][4] * 60
            await messagelog.append(record(i))
            await messagelog.sign_tree_head()
    return path


def ids(log: Path, **where: Any) -> list[str]:
    return [str(v.message_id) for v in iter_records(log, RecordFilter(**where))]


def cli(*args: str) -> Result:
    return CliRunner().invoke(group, list(args), catch_exceptions=False)


# --- filters ---------------------------------------------------------------------------------


async def test_the_clerks_family_lookups_of_the_day(log: Path) -> None:
    on_the_day = {"since": parse_time("2026-12-06"), "until": parse_time("2026-12-07")}
    assert ids(log, user_id=CLERK, path="*/family", **on_the_day) == ["m-1", "m-8"]
    assert ids(log, user_id=CLERK, path="*/family") == ["m-4", "m-1", "m-8"]
    assert ids(log, path="*/family", statuses=(parse_status("403"),), **on_the_day) == [
        "m-1",
        "m-2",
        "m-5",
    ]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        pytest.param({"path": "/408728723/"}, ["m-4", "m-1", "m-2", "m-3", "m-5", "m-6", "m-8"],
                     id="path-prefix"),
        pytest.param({"path": "/408728723"}, ["m-4", "m-0", "m-1", "m-2", "m-3", "m-5", "m-6",
                                              "m-8"], id="prefix-is-not-a-whole-segment"),
        pytest.param({"path": "*?lang=*"}, ["m-6"], id="glob-over-the-query"),
        pytest.param({"path": "/40872872[0-3]"}, ["m-0"], id="glob-is-the-whole-path"),
        pytest.param({"statuses": (parse_status("4xx"),)}, ["m-4", "m-1", "m-2", "m-5", "m-7"],
                     id="status-class"),
        pytest.param({"statuses": (parse_status("201"), parse_status("5xx"))}, ["m-6", "m-8"],
                     id="any-of-several-statuses"),
        pytest.param({"method": "POST"}, ["m-6"], id="method"),
        pytest.param({"user_id": OTHER}, ["m-2"], id="user-id"),
        pytest.param({"user_id": "ps-clerk-biddu-01"}, [], id="user-id-is-exact"),
        pytest.param({"since": parse_time("2026-12-06T09:06"),
                      "until": parse_time("2026-12-06T09:08")}, ["m-2", "m-3"], id="time-range"),
        pytest.param({"since": parse_time("2026-12-06T11:06+02:00"),
                      "until": parse_time("2026-12-06T11:08+02:00")}, ["m-2", "m-3"],
                     id="time-range-in-another-zone"),
    ],
)  # fmt: skip
async def test_each_filter(log: Path, where: dict[str, Any], expected: list[str]) -> None:
    assert ids(log, **where) == expected


@pytest.mark.parametrize("text", ["4x", "600", "abc", "40", "4xxx", "-403", "099"])
def test_a_status_that_is_neither_code_nor_class_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not an HTTP status"):
        parse_status(text)


@pytest.mark.parametrize("text", ["6 December", "2026-13-01", "yesterday", "", "12/06/2026"])
def test_a_malformed_time_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not an ISO date or time"):
        parse_time(text)


# --- the command -----------------------------------------------------------------------------


async def test_show_prints_request_user_id_and_status(log: Path) -> None:
    result = cli("show", "--db", str(log), "--user-id", CLERK, "--path", "*/family",
                 "--since", "2026-12-06", "--until", "2026-12-07")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("#2  2026-12-06T09:05:00.000  provider  403 Server.X"), lines
    assert "    request     GET /408728723/family" in lines
    assert f"    user id     {CLERK}" in lines
    assert f"    client      {WINDOW}" in lines and f"    service     {PERSONS}" in lines
    assert "    message id  m-1" in lines
    assert lines[-1] == "2 record(s), as logged (`exchange log verify` checks them)"


async def test_show_says_when_no_user_id_was_logged(log: Path) -> None:
    result = cli("show", "--db", str(log), "--id", "m-5")
    assert "    user id     (none)" in result.output.splitlines(), result.output


async def test_show_json_is_one_array_with_the_fields(log: Path) -> None:
    result = cli("show", "--db", str(log), "--status", "4xx", "--method", "GET", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert [r["message_id"] for r in shown] == ["m-4", "m-1", "m-2", "m-5", "m-7"]
    first = shown[0]
    assert (first["method"], first["path"], first["user_id"], first["http_status"]) == (
        "GET", "/408728723/family", CLERK, 403
    )  # fmt: skip
    assert first["entry"]["purpose"] == "citizen-service"
    assert json.loads(cli("show", "--db", str(log), "--user-id", "nobody", "--json").output) == []


async def test_show_limit_says_that_more_match(log: Path) -> None:
    result = cli("show", "--db", str(log), "--limit", "2")
    assert result.output.count("\n#") + result.output.startswith("#") == 2
    assert result.output.splitlines()[-1] == "more match past --limit 2: --limit 0 lists all"
    everything = cli("show", "--db", str(log), "--limit", "0")
    assert f"{len(EXCHANGES)} record(s), as logged" in everything.output
    assert "more match" not in everything.output
    exact = cli("show", "--db", str(log), "--limit", str(len(EXCHANGES)))
    assert "more match" not in exact.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--since", "6 December"], "error: --since: '6 December' is not an ISO date",
                     id="malformed-since"),
        pytest.param(["--until", "2026-12-32"], "error: --until: '2026-12-32' is not an ISO date",
                     id="malformed-until"),
        pytest.param(["--status", "4x"], "error: --status: '4x' is not an HTTP status",
                     id="malformed-status"),
        pytest.param(["--limit", "-1"], "error: --limit: give a number of records, or 0",
                     id="negative-limit"),
    ],
)  # fmt: skip
async def test_show_refuses_bad_filters_in_one_line(
    log: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(group, ["show", "--db", str(log), *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
    as_json = CliRunner().invoke(group, ["show", "--db", str(log), *args, "--json"])
    assert as_json.exit_code == 2
    error = json.loads(as_json.output)["error"]
    assert error["message"].startswith(message.removeprefix("error: ")), error
    assert error["exit_code"] == 2


@pytest.mark.parametrize("option", ["--user", "--clerk", "--status-class", "--from"])
@pytest.mark.parametrize("command", ["show", "heads"])
async def test_an_unknown_filter_is_a_usage_error(log: Path, command: str, option: str) -> None:
    result = CliRunner().invoke(group, [command, "--db", str(log), option, "x"])
    assert result.exit_code == 2
    assert f"Error: No such option '{option}'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["show", "heads"])
def test_a_file_that_is_not_a_log_is_one_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "x.sqlite").write_bytes(b"not a database" * 100)
    result = CliRunner().invoke(group, [command, "--db", str(tmp_path / "x.sqlite")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    as_json = CliRunner().invoke(group, [command, "--db", str(tmp_path / "x.sqlite"), "--json"])
    assert as_json.exit_code == 2
    assert json.loads(as_json.output)["error"]["exit_code"] == 2  # not a half-written array


# --- streaming -------------------------------------------------------------------------------


async def test_show_streams_a_large_log(tmp_path: Path, pki: Pki) -> None:  # noqa: F811
    """Reading every record of a log holds one chunk of them at a time, not the log: the peak
    of memory allocated while all 1,000 records (20 MB of entries) go through is a small
    fraction of the entries' size (a list of them, as `log show` built before, holds it all)."""
    path = tmp_path / "large.sqlite"
    body = "x" * 20_000
    with MessageLog(path, pki.signer, owner=OWNER) as messagelog:
        for batch in range(10):
            await asyncio.gather(*(
                messagelog.append(dict(record(0), message_id=f"big-{batch}-{i}", body=body))
                for i in range(100)
            ))  # fmt: skip
    records = iter_records(path, RecordFilter(user_id=CLERK, path="*/408728723"))
    tracemalloc.start()
    try:
        count = sum(1 for _ in records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 1000
    assert peak < 5_000_000, peak


# --- tree heads ------------------------------------------------------------------------------


async def test_heads_lists_sizes_times_stamps_and_signer(tmp_path: Path, pki: Pki) -> None:  # noqa: F811
    built = await build(tmp_path, pki)
    heads = list(iter_heads(built.db))
    assert [h.size for h in heads] == list(range(1, 36))
    stamped = [h for h in heads if h.stamped_at is not None]
    assert [h.size for h in stamped] == [10, 20, 30]
    assert all(h.tsa == "Test TSA" for h in stamped)
    assert heads[9].root == built.heads[10].root and heads[9].jws == built.heads[10].jws
    signer = heads[0].signer
    assert signer is not None and signer.member == "PS/GOV/MOI"
    assert signer.serial == pki.signer.cert.serial_number

    result = cli("heads", "--db", str(built.db), "--stamped", "--covers", "12")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("size ")] == ["20", "30"]
    assert "time-stamped " in lines[0] and "(Test TSA)" in lines[0]
    assert f"    root        {built.heads[20].root.hex()}" in lines
    assert any(
        line.startswith("    signer      ") and "member PS/GOV/MOI" in line for line in lines
    )
    assert lines[-1].startswith("2 tree head(s), as logged")


async def test_heads_json_and_filters(tmp_path: Path, pki: Pki) -> None:  # noqa: F811
    built = await build(tmp_path, pki)
    result = cli("heads", "--db", str(built.db), "--covers", "33", "--json")
    shown = json.loads(result.output)
    assert [h["size"] for h in shown] == [34, 35]
    assert shown[0]["root_hex"] == built.heads[34].root.hex()
    assert shown[0]["time_stamped_at"] is None and shown[0]["signer"]["member"] == "PS/GOV/MOI"
    # 30 heads were signed 40 days before the last 5
    cut = dt.datetime.fromtimestamp(built.now - 20 * 86400, dt.UTC).isoformat()
    old = cli("heads", "--db", str(built.db), "--until", cut, "--json", "--limit", "0")
    recent = cli("heads", "--db", str(built.db), "--since", cut, "--json")
    assert [h["size"] for h in json.loads(old.output)] == list(range(1, 31))
    assert [h["size"] for h in json.loads(recent.output)] == list(range(31, 36))
    assert list(iter_heads(built.db, HeadFilter(covers=35))) == []


async def test_heads_and_show_read_the_archives_too(tmp_path: Path, pki: Pki) -> None:  # noqa: F811
    built = await build(tmp_path, pki)
    archive(built, pki)
    heads = list(iter_heads(built.db, archive_dir=built.archives))
    assert [h.size for h in heads] == list(range(1, 36))
    assert [h.archive is not None for h in heads] == [True] * 30 + [False] * 5
    assert [h.size for h in heads if h.stamped_at is not None] == [10, 20, 30]
    live_only = [h.size for h in iter_heads(built.db)]
    assert live_only == list(range(30, 36))  # the boundary head stays in the database
    found = [v.seq for v in iter_records(built.db, RecordFilter(message_id="msg-3"),
                                         archive_dir=built.archives)]  # fmt: skip
    assert found == [3]
    result = cli("heads", "--db", str(built.db), "--covers", "8", "--limit", "1")
    assert "archived in messagelog-000001.zip" in result.output, result.output


async def test_heads_lists_the_empty_tree_head_a_server_stamps_at_start(
    tmp_path: Path,
    pki: Pki,  # noqa: F811
) -> None:
    path = tmp_path / "log.sqlite"
    with MessageLog(path, pki.signer, owner=OWNER) as messagelog:
        empty = await messagelog.sign_tree_head()
        assert empty is not None and empty.size == 0
        token, gen_time = pki.stamp(empty)
        await messagelog.add_timestamp(0, token, "Test TSA", gen_time)
        await messagelog.append(record(0))
    assert [(h.size, h.stamped_at is not None) for h in iter_heads(path)] == [(0, True), (1, False)]
