"""The central server: the registry of the federation and the publisher of the global configuration.

``registry`` is the SQLite store the CLI edits; ``app`` is the aiohttp server that signs and serves
the configuration. Neither is imported here, so importing the package costs nothing.
"""
