"""Every trust decision of Exchange, below both the servers and the auditor's tools.

- :mod:`exchange.trustcore.peers`: what a peer security server must prove (its authentication
  certificate, HELLO, OCSP staples) and which key may sign for which member.
- :mod:`exchange.trustcore.messages`: what a signed request and a signed response prove.

Sans-IO: bytes and parsed values in, verified value objects or an :class:`ExchangeError` out;
any reference time is passed in. Imports ``identifiers``, ``errors``, ``protocol``, ``trust`` and
``globalconf`` only; never ``server``, ``audit``, ``cli``, ``messagelog``, aiohttp or sqlite3.
"""
