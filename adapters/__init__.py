"""Adapters: plain HTTP services that put a ministry's data behind its security server.

An adapter is what docs/design.md calls the backend of a service: the provider's security server
calls it
at the service's base URL plus the path after the service code. Adapters know nothing of the
exchange protocol, signatures or policies; the security server in front of them does that.
"""
