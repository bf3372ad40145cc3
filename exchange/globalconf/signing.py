"""The published form of the global configuration: a compact JWS over its canonical bytes.

The central server signs ``canonical_bytes(conf.to_dict())`` with its configuration signing key
(ES256, RFC 7515 compact serialisation, header ``x5t#S256`` naming the verification certificate
carried in the anchor) and serves the token as ``application/jose`` (RFC 7515 §9.2.1). Any JOSE
library verifies it with the anchor's certificate.

This module only signs; :mod:`exchange.globalconf.verifier` decides whether to trust. No IO.
"""

from __future__ import annotations

from typing import Final

from exchange.globalconf.document import GlobalConf
from exchange.protocol.canonical import canonical_bytes
from exchange.protocol.jws import Signer

CONTENT_TYPE: Final = "application/jose"
VERSION_HEADER: Final = "X-Exchange-GlobalConf-Version"


def sign_globalconf(conf: GlobalConf, signer: Signer) -> bytes:
    """The bytes the central server serves for ``conf``."""
    return signer.sign(canonical_bytes(conf.to_dict())).encode("ascii")
