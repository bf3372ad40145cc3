"""The security server: consumer side, provider side, the peer client between them."""
