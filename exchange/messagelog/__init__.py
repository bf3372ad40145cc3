"""The message log: every exchange a security server took part in, as leaves of a signed Merkle
tree (docs/design.md §8, §9).

- ``merkle``: the sans-IO RFC 9162 math (hashes, proofs, compact range);
- ``store``: :class:`~exchange.messagelog.store.MessageLog`, the SQLite log with group commit and
  per-batch signed tree heads;
- ``verify``: :func:`~exchange.messagelog.verify.verify_log`, the auditor's offline check;
- ``query`` and ``heads``: :func:`~exchange.messagelog.query.iter_records` and
  :func:`~exchange.messagelog.heads.iter_heads`, streamed listings for the CLI (not verified);
- ``proofs``: inclusion and consistency proofs, and their offline Merkle check.

Import from the submodules: this package imports nothing itself, so that importing the Merkle
math never drags in sqlite3. Evidence bundles, time-stamped tree heads, archiving and the
PostgreSQL store are later issues.
"""
