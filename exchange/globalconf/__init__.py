"""The global configuration (docs/design.md §6): document, anchor, signing, verification, download.

``document`` (the values and their dict form), ``signing`` (the published JWS), ``anchor`` (the
trust root file) and ``verifier`` (the trusted state with anti-rollback) are sans-IO apart from
reading and writing the anchor file; ``client`` is the aiohttp poller and is not imported here.
"""

from exchange.globalconf.anchor import Anchor
from exchange.globalconf.document import (
    ApprovedCA,
    ApprovedTSA,
    GlobalConf,
    GlobalGroup,
    MemberInfo,
    SecurityServerInfo,
    Settings,
)
from exchange.globalconf.signing import CONTENT_TYPE, VERSION_HEADER, sign_globalconf
from exchange.globalconf.verifier import (
    GlobalConfEquivocation,
    GlobalConfExpired,
    GlobalConfRollback,
    GlobalConfSignatureError,
    TrustedGlobalConf,
)

__all__ = [
    "CONTENT_TYPE",
    "VERSION_HEADER",
    "Anchor",
    "ApprovedCA",
    "ApprovedTSA",
    "GlobalConf",
    "GlobalConfEquivocation",
    "GlobalConfExpired",
    "GlobalConfRollback",
    "GlobalConfSignatureError",
    "GlobalGroup",
    "MemberInfo",
    "SecurityServerInfo",
    "Settings",
    "TrustedGlobalConf",
    "sign_globalconf",
]
