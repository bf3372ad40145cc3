"""Message log archiving: how long a run takes, how long each file's transaction holds the write
lock (while it holds it, the server's log writes wait), and what auditors' tools cost once records
are archived: ``log verify`` across the archives and the evidence bundle of an archived record
(``audit export``), each timed and with how often it opened each archive file and read its zip
members.

Run: ``python bench/archive_bench.py [--records 100000] [--max-records 20000] [--repeat 3]``.
Numbers, not assertions: the tests never time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from exchange.audit import bundle
from exchange.identifiers import SecurityServerId, parse_member
from exchange.messagelog import archive
from exchange.messagelog.store import MessageLog, tree_head_digest
from exchange.messagelog.verify import verify_log
from exchange.protocol.jws import Signer
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import generate_key
from exchange.trust.profiles import sign_template
from exchange.trust.timestamp import (
    build_timestamp_request,
    build_timestamp_response,
    issue_tsa_cert,
    token_of_response,
)

BATCH = 500
OWNER = SecurityServerId("PS", "GOV", "MOI", "ss1")


def make_entry(i: int) -> dict[str, Any]:
    return {
        "message_id": f"0b6c3f2e-{i:012d}",
        "client": "PS/GOV/MOF/tax",
        "side": "provider",
        # a logged body: base64url of bytes that do not compress, as signed data mostly is
        "request_body": base64.urlsafe_b64encode(random.Random(i).randbytes(450)).decode(),
    }


async def build(root: Path, records: int, stamp_every: int) -> tuple[Path, Signer, Any, Any]:
    back = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    ca = CertificateAuthority.create(root / "ca", now=back)
    key = generate_key()
    signer = Signer(key, ca.issue(key.public_key(), sign_template(parse_member("PS/GOV/MOI"))))
    tsa_key = generate_key()
    tsa_cert = issue_tsa_cert(ca, tsa_key.public_key(), "TSA", now=back)
    db = root / "messagelog.sqlite"
    with MessageLog(db, signer, owner=OWNER) as log:
        for start in range(0, records, BATCH):
            await log.append_many([make_entry(i) for i in range(start, start + BATCH)])
            head = await log.sign_tree_head()  # the head committed with the batch
            if head.size % stamp_every == 0 or head.size == records:
                now = dt.datetime.now(dt.UTC)
                request = build_timestamp_request(tree_head_digest(head))
                response = build_timestamp_response(
                    request, tsa_key=tsa_key, tsa_cert=tsa_cert, serial=time.time_ns(), now=now
                )
                gen_time = int(now.timestamp() * 1000)
                await log.add_timestamp(head.size, token_of_response(response), "TSA", gen_time)
    return db, signer, ca.cert, tsa_cert


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--max-records", type=int, default=archive.DEFAULT_MAX_RECORDS)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each auditor's command")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db, signer, ca, tsa = asyncio.run(build(root, args.records, args.max_records))
        held: list[float] = []
        commit = archive._commit

        def timed(*a: Any, **k: Any) -> None:
            t = time.perf_counter()
            commit(*a, **k)
            held.append(time.perf_counter() - t)

        archive._commit = timed  # type: ignore[assignment]
        t = time.perf_counter()
        written = archive.archive_log(
            db, root / "archives", signer, older_than_ms=2**62, max_records=args.max_records
        )
        run = time.perf_counter() - t
        size = sum((root / "archives" / e.file).stat().st_size for e in written)
        print(f"archived {args.records} records into {len(written)} file(s) in {run:.2f} s")
        print(f"  write lock held per file: max {max(held):.3f} s, total {sum(held):.3f} s")
        print(f"  archive files: {size / 1e6:.2f} MB")
        folder = root / "archives"

        def verify() -> str:
            report = verify_log(
                db,
                trusted_cas=[ca],
                owner=OWNER,
                check_records=False,
                tsa_certs=[tsa],
                archive_dir=folder,
            )
            return f"ok={report.ok}, {report.records} records"

        took, reads, outcome = _timed(verify, folder, args.repeat)
        print(f"log verify across archives ({outcome}): {_figures(took, reads, len(written))}")
        print(f"  {args.records / statistics.median(took):,.0f} records/s")
        # an exchange in the first archive: its evidence needs every archive's leaves
        files = bundle.LogFiles(db, folder)

        def export() -> str:
            out = root / "evidence.zip"
            message_id = make_entry(7)["message_id"]
            asyncio.run(bundle.export_bundle(files, message_id, out, cas=[ca]))
            return f"{out.stat().st_size:,} bytes"

        took, reads, outcome = _timed(export, folder, args.repeat)
        print(
            f"audit export of an archived record ({outcome}): {_figures(took, reads, len(written))}"
        )


class _Reads:
    """How often a run opens each archive file (audit hook on ``open``) and reads its members."""

    active: Counter[str] | None = None
    folder = ""

    @classmethod
    def hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls.active is not None and event == "open" and str(args[0]).startswith(cls.folder):
            cls.active["opens"] += 1

    @classmethod
    @contextmanager
    def counting(cls, folder: Path) -> Iterator[Counter[str]]:
        counts: Counter[str] = Counter()
        member_open = zipfile.ZipFile.open

        def counted(self: zipfile.ZipFile, name: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
            if mode == "r" and not str(self.filename).endswith("evidence.zip"):
                counts["members"] += 1
            return member_open(self, name, mode, *a, **k)

        cls.active, cls.folder, zipfile.ZipFile.open = counts, str(folder), counted  # type: ignore[method-assign]
        try:
            yield counts
        finally:
            cls.active, zipfile.ZipFile.open = None, member_open  # type: ignore[method-assign]


sys.addaudithook(_Reads.hook)


def _timed(
    run: Callable[[], str], folder: Path, repeat: int
) -> tuple[list[float], Counter[str], str]:
    took: list[float] = []
    for _ in range(repeat):
        with _Reads.counting(folder) as reads:
            t = time.perf_counter()
            outcome = run()
            took.append(time.perf_counter() - t)
    return took, reads, outcome


def _figures(took: list[float], reads: Counter[str], files: int) -> str:
    return (
        f"median {statistics.median(took):.3f} s, min {min(took):.3f} s over {len(took)} runs; "
        f"archive file opens {reads['opens']} ({reads['opens'] / files:.1f} per file), "
        f"zip member reads {reads['members']} ({reads['members'] / files:.1f} per file)"
    )


if __name__ == "__main__":
    main()
