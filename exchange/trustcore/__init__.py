"""Every trust decision about signed documents, below both the servers and the auditor's tools.

Sans-IO: bytes and parsed values in, verified value objects or an :class:`ExchangeError` out;
any reference time is passed in. Imports ``identifiers``, ``errors``, ``protocol``, ``trust`` and
``globalconf`` only; never ``server``, ``audit``, ``cli``, ``messagelog``, aiohttp or sqlite3.
"""
