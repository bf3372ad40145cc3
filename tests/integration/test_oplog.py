"""The operator's log: every line about one exchange carries its message id, on both sides, in
JSON lines (``[logging] format = "json"``) and in text; lines about nothing in particular carry
none. Real servers of the shared federation; the log is read as the journal would get it.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from exchange.oplog import LogSettings, configure_logging
from tests.integration.conftest import Net
from tests.integration.support import new_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

UNKNOWN = "/r1/PS/GOV/MOI/population-registry/no-such-service"
NOBODY = "/r1/PS/GOV/NOBODY/no-subsystem/service"


@pytest.fixture
def journal() -> Iterator[tuple[io.StringIO, list[LogSettings]]]:
    """The root logger writes to a buffer with the settings the test installs; restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    installed: list[LogSettings] = []
    try:
        yield stream, installed
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


async def test_json_lines_of_an_exchange_carry_its_message_id(
    net: Net, journal: tuple[io.StringIO, list[LogSettings]]
) -> None:
    stream, _ = journal
    configure_logging(LogSettings("json", "info"), stream)
    refused, unknown = new_id("oplog-provider"), new_id("oplog-consumer")
    status, headers, _ = await net.call("palpost", UNKNOWN, headers={"X-Road-Id": refused})
    assert (status, headers["X-Road-Error"]) == (404, "Server.ServerProxy.UnknownService")
    status, headers, _ = await net.call("palpost", NOBODY, headers={"X-Road-Id": unknown})
    assert headers["X-Road-Error"] == "Server.ClientProxy.UnknownMember", status
    logging.getLogger("exchange.test").info("a line about no exchange")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    for message_id, logger in ((refused, "provider"), (unknown, "consumer")):
        about = [line for line in lines if message_id in line["message"]]
        assert f"exchange.server.{logger}" in {line["logger"] for line in about}, lines
        assert all(line["message_id"] == message_id for line in about), about
    assert "message_id" not in lines[-1] and lines[-1]["message"] == "a line about no exchange"


async def test_text_lines_name_the_message_id_after_the_logger(
    net: Net, journal: tuple[io.StringIO, list[LogSettings]]
) -> None:
    stream, _ = journal
    configure_logging(LogSettings("text", "info"), stream)
    message_id = new_id("oplog-text")
    status, _, _ = await net.call("palpost", UNKNOWN, headers={"X-Road-Id": message_id})
    assert status == 404
    about = [line for line in stream.getvalue().splitlines() if message_id in line]
    assert about
    assert all(
        f"exchange.server.provider: [{message_id}] " in line
        or f"exchange.server.consumer: [{message_id}] " in line
        for line in about
    )


async def test_the_level_hides_lines_below_it(
    net: Net, journal: tuple[io.StringIO, list[LogSettings]]
) -> None:
    stream, _ = journal
    configure_logging(LogSettings("json", "error"), stream)
    status, _, _ = await net.call("palpost", UNKNOWN, headers={"X-Road-Id": new_id("quiet")})
    assert status == 404
    assert stream.getvalue() == ""
