"""Message log archiving: how long a run takes, how long each file's transaction holds the write
lock (while it holds it, the server's log writes wait), and verification across the archives.

Run: ``python bench/archive_bench.py [--records 100000] [--max-records 20000]``.
Numbers, not assertions: the tests never time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

from exchange.identifiers import parse_member
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


def make_entry(i: int) -> dict[str, Any]:
    return {
        "message_id": f"0b6c3f2e-{i:012d}",
        "client": "PS/GOV/MOF/tax",
        "side": "provider",
        "request_jws": "x" * 600,
    }


async def build(root: Path, records: int, stamp_every: int) -> tuple[Path, Signer, Any, Any]:
    back = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    ca = CertificateAuthority.create(root / "ca", now=back)
    key = generate_key()
    signer = Signer(key, ca.issue(key.public_key(), sign_template(parse_member("PS/GOV/MOI"))))
    tsa_key = generate_key()
    tsa_cert = issue_tsa_cert(ca, tsa_key.public_key(), "TSA", now=back)
    db = root / "messagelog.sqlite"
    with MessageLog(db, signer) as log:
        for start in range(0, records, BATCH):
            await log.append_many([make_entry(i) for i in range(start, start + BATCH)])
            head = log.latest_tree_head()
            assert head is not None
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
        t = time.perf_counter()
        report = verify_log(db, trusted_cas=[ca], tsa_certs=[tsa], archive_dir=root / "archives")
        took = time.perf_counter() - t
        print(f"verify across archives: ok={report.ok}, {report.records / took:,.0f} records/s")


if __name__ == "__main__":
    main()
