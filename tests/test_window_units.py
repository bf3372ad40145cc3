"""The window's parts that need no server: translations, formats, checks, cookies, throttling,
refusal messages, and its command line."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.extract import extract_from_dir

from examples.window import forms, i18n
from examples.window.config import Throttle
from examples.window.refusals import explain
from examples.window.sessions import Signer
from examples.window.xroad import UNREACHABLE, Answer

WINDOW = Path(__file__).resolve().parents[1] / "examples" / "window"
LANGUAGES = i18n.load_languages()


def _messages() -> set[str]:
    found = extract_from_dir(
        str(WINDOW),
        [("**/templates/**.html", "jinja2"), ("**.py", "python")],
        keywords={"_": None, "N_": None},
    )
    return {m if isinstance(m, str) else m[0] for _, _, m, _, _ in found}


def test_every_message_shown_has_an_arabic_translation() -> None:
    arabic = LANGUAGES["ar"]
    messages = _messages()
    assert len(messages) > 100
    missing = sorted(m for m in messages if arabic.gettext(m) == m)
    assert not missing


def _fmt(code: str) -> i18n.Formatter:
    return i18n.Formatter(LANGUAGES[code], ZoneInfo("Asia/Hebron"))


def test_amounts_are_exact_with_their_currency_and_latin_digits() -> None:
    assert _fmt("en").amount("25.00", "ILS") == "₪25.00"
    assert _fmt("en").amount("1234.5", "ILS") == "₪1,234.50"
    assert _fmt("en").amount("0.125", "ILS") == "₪0.125"  # never rounded away
    assert _fmt("en").amount("0.10", "ILS") == "₪0.10"
    arabic = _fmt("ar").amount("25.00", "ILS")
    assert "25.00" in arabic and "₪" in arabic
    assert Decimal("0.1") + Decimal("0.2") == Decimal("0.3")  # what floats would get wrong
    assert _fmt("en").amount("not a number", "ILS") == "not a number ILS"


def test_dates_are_day_first_in_palestines_time_zone() -> None:
    assert _fmt("en").date("2026-12-03") == "03/12/2026"
    assert _fmt("ar").date("2026-12-03") == "03/12/2026"
    assert _fmt("ar").long_date(dt.date(2026, 12, 3)) == "3 كانون الأول 2026"
    # 22:30 UTC is already the next day in Palestine (UTC+2 in winter)
    assert _fmt("en").moment("2026-12-03T22:30:00Z") == "04/12/2026 00:30"
    assert _fmt("en").date("03.12.2026") == "03.12.2026"


def test_the_language_is_the_clerks_choice_then_the_browsers() -> None:
    assert i18n.choose("ar", "en-US,en;q=0.9", LANGUAGES) == "ar"
    assert i18n.choose(None, "ar-PS,ar;q=0.9", LANGUAGES) == "ar"
    assert i18n.choose("xx", "fr-FR", LANGUAGES) == "en"
    assert LANGUAGES["ar"].direction == "rtl" and LANGUAGES["en"].direction == "ltr"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        pytest.param("123456782", "123456782", id="valid"),
        pytest.param(" 123456782 ", "123456782", id="spaces"),
        pytest.param("123456789", None, id="bad-check-digit"),
        pytest.param("12345678", None, id="eight-digits"),
        pytest.param("١٢٣٤٥٦٧٨٢", None, id="arabic-indic-digits"),
        pytest.param("12345678<", None, id="markup"),
        pytest.param(None, None, id="missing"),
    ],
)
def test_national_ids_are_checked_before_anything_is_sent(
    typed: str | None, expected: str | None
) -> None:
    assert forms.national_id(typed) == expected


def test_a_cookie_altered_or_signed_with_another_key_is_refused() -> None:
    signer, other = Signer(b"k" * 32), Signer(b"o" * 32)
    signed = signer.sign("session", "token")
    assert signer.unsign("session", signed) == "token"
    assert signer.unsign("session", "tokem" + signed[5:]) is None
    assert signer.unsign("session", other.sign("session", "token")) is None
    assert signer.unsign("sign-in", signed) is None
    assert signer.unsign("session", "token") is None


def test_each_failure_past_the_free_ones_doubles_the_wait_up_to_a_limit() -> None:
    policy = Throttle(free=5, base_seconds=30, max_seconds=900)
    waits = [policy.lock_seconds(n) for n in range(1, 12)]
    assert waits[:4] == [0, 0, 0, 0]
    assert waits[4:] == [30, 60, 120, 240, 480, 900, 900]


@pytest.mark.parametrize(
    ("status", "code", "changes", "expected"),
    [
        pytest.param(
            403, "Server.ServerProxy.AccessDenied", False, "has not allowed", id="no-grant"
        ),
        pytest.param(
            403,
            "Server.ServerProxy.AccessDenied.PurposeNotAllowed",
            False,
            "purpose of use",
            id="purpose",
        ),
        pytest.param(
            403,
            "Server.ServerProxy.AccessDenied.GrantExpired",
            False,
            "expired",
            id="grant-expired",
        ),
        pytest.param(429, "Server.ServerProxy.RateLimited", True, "limit", id="quota"),
        pytest.param(
            502, "Server.ServerProxy.ServiceFailed", False, "not available", id="service-down"
        ),
        pytest.param(
            502,
            "Server.ServerProxy.ServiceFailed",
            True,
            "never done twice",
            id="service-down-while-paying",
        ),
        pytest.param(None, UNREACHABLE, False, "does not answer", id="own-server-down"),
        pytest.param(None, UNREACHABLE, True, "never done twice", id="own-server-down-paying"),
        pytest.param(409, None, True, "done already", id="paid-already"),
    ],
)
def test_refusals_say_what_happened_and_keep_the_code(
    status: int | None, code: str | None, changes: bool, expected: str
) -> None:
    problem = explain(Answer(status, None, "m-1", code), changes_something=changes)
    assert expected in problem.message
    assert problem.code == (code or f"HTTP {status}") and problem.message_id == "m-1"
    assert LANGUAGES["ar"].gettext(problem.message) != problem.message


def _window(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.window", *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_add_clerk_from_the_command_line(tmp_path: Path) -> None:
    state = str(tmp_path / "w")
    made = _window("add-clerk", "--state-dir", state, "--username", "amal", "--password-stdin",
                   stdin="a long enough password\n")  # fmt: skip
    assert made.returncode == 0 and "clerk amal added" in made.stdout, made.stderr
    assert (tmp_path / "w" / "window.sqlite").stat().st_mode & 0o077 == 0
    again = _window("add-clerk", "--state-dir", state, "--username", "amal", "--password-stdin",
                    stdin="a long enough password\n")  # fmt: skip
    assert again.returncode == 2 and "exists already" in again.stderr
    weak = _window("add-clerk", "--state-dir", state, "--username", "basel", "--password-stdin",
                   stdin="short\n")  # fmt: skip
    assert weak.returncode == 2 and "12 to 256 characters" in weak.stderr
    assert "Traceback" not in weak.stderr
    bad = _window("add-clerk", "--state-dir", state, "--username", "<b>", "--password-stdin",
                  stdin="a long enough password\n")  # fmt: skip
    assert bad.returncode == 2 and "a username is" in bad.stderr


def test_serve_prints_its_url_once_listening_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.window", "serve", "--consumer-url",
         "http://127.0.0.1:9", "--state-dir", str(tmp_path / "w")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        url = json.loads(line[len("READY ") :])["url"]
        with urllib.request.urlopen(url + "/sign-in", timeout=30) as resp:
            assert resp.status == 200
            assert '<label for="username">Username</label>' in resp.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        if proc.stdout is not None:
            proc.stdout.close()
