"""Exchange: a secure data exchange layer for governments, in the style of X-Road."""

__version__ = "0.1.0"
