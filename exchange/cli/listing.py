"""How ``exchange log show`` and ``log heads`` print what they find, one item at a time.

Both stream: a block of lines per item for people, or a JSON array written element by element
(one compact object per line, so the whole output is one JSON value and still reads line by
line). Logged fields are the peers' words: every value is printed with
:func:`~exchange.terminal.one_value`, one line each, nothing a terminal acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson

from exchange.cli.common import console, err_console
from exchange.terminal import json_text, one_value

if TYPE_CHECKING:
    from exchange.messagelog.heads import HeadView
    from exchange.messagelog.query import RecordView

T = TypeVar("T")
_LABEL = 11


@dataclass(frozen=True, slots=True)
class Listed:
    """How many items were printed, and whether more matched past the limit."""

    shown: int
    more: bool


def stream(
    items: Iterator[T],
    limit: int | None,
    *,
    as_json: bool,
    to_dict: Callable[[T], dict[str, Any]],
    lines: Callable[[T], Iterable[str]],
) -> Listed:
    """Print up to ``limit`` items (all, for None) of ``items`` as JSON or as lines.

    The first item is read before anything is printed, so that a file that cannot be read is
    an error message, not a half-written JSON array.
    """
    try:
        first = next(items, None)
        shown, more = 0, False
        if as_json:
            click.echo("[", nl=False)
        pending = first
        while pending is not None:
            if limit is not None and shown >= limit:
                more = True
                break
            if as_json:
                text = orjson.dumps(to_dict(pending), option=orjson.OPT_SORT_KEYS).decode()
                click.echo(("\n" if shown == 0 else ",\n") + json_text(text), nl=False)
            else:
                for line in lines(pending):
                    console.print(line, markup=False, highlight=False)
            shown += 1
            pending = next(items, None)
        if as_json:
            click.echo("\n]" if shown else "]")
        return Listed(shown, more)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def footer(listed: Listed, noun: str, limit: int | None, *, as_json: bool, note: str) -> None:
    """The count after a listing, and whether the limit cut it short (under --json only that,
    on stderr, so that stdout stays one JSON value)."""
    more = f"more match past --limit {limit}: --limit 0 lists all" if listed.more else ""
    if as_json:
        if more:
            err_console.print(more, markup=False, highlight=False)
        return
    console.print(f"{listed.shown} {noun}(s), {note}", markup=False, highlight=False)
    if more:
        console.print(more, markup=False, highlight=False)


def _field(name: str, value: object) -> str:
    return f"    {name:<{_LABEL}} {one_value(str(value))}"


def record_lines(view: RecordView) -> list[str]:
    """A heading line (seq, time, side, status), then one ``name  value`` line per field."""
    lines = [
        f"#{view.seq}  {view.logged_at.replace('+00:00', '')[:23]}  "
        f"{one_value(view.side or '')}  {one_value(record_status(view.entry))}"
    ]
    request = " ".join(p for p in (view.method, view.path) if p)
    for name, value in (
        ("request", request),
        ("user id", view.user_id if view.user_id is not None else "(none)"),
        ("client", view.client),
        ("service", view.service),
        ("purpose", view.entry.get("purpose")),
        ("message id", view.message_id),
        ("decision", decision_line(view.entry.get("decision"))),
        ("released", ", ".join(view.released_fields or ())),
    ):
        if value:
            lines.append(_field(name, value))
    return lines


def record_status(entry: dict[str, Any]) -> str:
    """``403 Server.ServerProxy.AccessDenied``, or ``200 ok``."""
    error = entry.get("error")
    code = entry.get("http_status")
    if isinstance(error, dict):
        return f"{code} {error.get('type')}"
    return f"{code} {entry.get('status') or ''}".strip()


def decision_line(decision: object) -> str:
    """A short form: the grant that allowed, or that nothing did; the full record has more."""
    if not isinstance(decision, dict):
        return ""
    if decision.get("allowed"):
        return f"allowed by {decision.get('grant')} (policy {decision.get('policy_version')})"
    return f"denied (policy {decision.get('policy_version')})"


def head_lines(head: HeadView) -> list[str]:
    """A heading line (size, signing time, time-stamp), then the root and the signer."""
    stamp = "no time-stamp"
    if head.stamped_at is not None:
        by = f" ({head.tsa})" if head.tsa else ""
        stamp = f"time-stamped {head.stamped_at_text().replace('+00:00', '')}{by}"
    lines = [
        one_value(f"size {head.size}  signed {head.signed_at_text().replace('+00:00', '')}  "
                  f"{stamp}"),
        _field("root", head.root.hex()),
    ]  # fmt: skip
    signer = head.signer
    if signer is None:
        lines.append(_field("signer", "(certificate not in the log)"))
    else:
        member = f"member {signer.member}" if signer.member else "not a signing certificate"
        lines.append(_field("signer", f"{signer.subject} (serial {signer.serial:x}, {member})"))
    lines.append(_field("certificate", head.thumbprint or "(none named)"))
    if head.archive:
        lines.append(_field("archived in", head.archive))
    return lines
