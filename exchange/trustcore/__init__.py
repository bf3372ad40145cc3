"""The trust core: every trust decision of Exchange, below both the servers and the auditor's
tools (sans-IO, ``now`` always given).

- :mod:`exchange.trustcore.peers`: what a peer security server must prove (its authentication
  certificate, HELLO, OCSP staples) and which key may sign for which member.
"""
