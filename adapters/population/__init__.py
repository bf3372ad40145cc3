"""Interior's population registry adapter: synthetic people in SQLite, served over HTTP.

``generator`` makes the people (sans-IO), ``store`` writes and reads the SQLite file, ``app`` is
the aiohttp service the provider security server calls, ``openapi`` describes it.
"""
