"""The one trusted global configuration of a security server (docs/design.md §6).

Modelled on python-tuf's ``TrustedMetadataSet``: a :class:`TrustedGlobalConf` starts from the
anchor (and optionally the configuration persisted before a restart) and only ever replaces its
configuration with bytes that verify against the anchor, name the same instance and do not roll the
version back. Every decision is judged against the ``now`` the caller passes.

Versions and re-signing: the central server bumps ``version`` on every change of content and
re-signs the same content every minute with a new ``generated_at``/``expires_at``. So an equal
version with the same content and a later ``generated_at`` is a *refresh*: it replaces the held
configuration (extending its expiry) but is "no change" to callers. An equal version with different
content is a signed equivocation and is refused, as is any lower version.

A persisted configuration loaded at start (:meth:`TrustedGlobalConf.load_local`) may have expired
while the server was down: it is still held, so that its version keeps protecting against rollback,
but :meth:`TrustedGlobalConf.check_fresh` refuses to serve messages until a fresh one arrives.

The floor (:meth:`TrustedGlobalConf.raise_floor`): the highest version this server had saved to
put in force before a restart (:mod:`exchange.globalconf.floor`). Any configuration below it is a
rollback, even while none is held: so a persisted file swapped for an older, validly signed one is
refused, and so is an older one downloaded after that, until a version at or above the floor comes.

Sans-IO: takes bytes and ``now``; fetching and persisting live in :mod:`exchange.globalconf.client`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from exchange.errors import ExchangeError, GlobalConfError, OutdatedGlobalConf
from exchange.globalconf.anchor import Anchor
from exchange.globalconf.document import GlobalConf
from exchange.protocol import jws

MAX_FUTURE_SKEW: Final = 300
"""How far ``generated_at`` may lie ahead of our clock (seconds)."""


class GlobalConfSignatureError(GlobalConfError):
    """The configuration is not a JWS signed by a key of the anchor."""

    code = "Server.ClientProxy.InvalidGlobalConf"


class GlobalConfRollback(GlobalConfError):
    """The configuration's version is lower than the one held."""

    code = "Server.ClientProxy.GlobalConfRollback"


class GlobalConfEquivocation(GlobalConfError):
    """The same version was signed twice with different content."""

    code = "Server.ClientProxy.InvalidGlobalConf"


class GlobalConfExpired(GlobalConfError):
    """The configuration had expired before it was offered."""

    code = "Server.ClientProxy.OutdatedGlobalConf"


class TrustedGlobalConf:
    """The global configuration a security server trusts, and the rules for replacing it."""

    def __init__(
        self, anchor: Anchor, *, initial: bytes | None = None, now: int, floor: int = 0
    ) -> None:
        self._anchor = anchor
        self._current: GlobalConf | None = None
        self._current_bytes: bytes | None = None
        self._floor = floor
        if initial is not None:
            self.load_local(initial, now)

    @property
    def anchor(self) -> Anchor:
        return self._anchor

    @property
    def current(self) -> GlobalConf | None:
        return self._current

    @property
    def current_bytes(self) -> bytes | None:
        """The signed bytes of :attr:`current`, exactly as received (for persisting)."""
        return self._current_bytes

    @property
    def floor(self) -> int:
        """The lowest version this object would accept: its floor, or the held version if
        higher."""
        held = self._current.version if self._current is not None else 0
        return max(self._floor, held)

    def raise_floor(self, version: int) -> None:
        """From now on refuse any configuration below ``version``, even while none is held (the
        highest version this server had in force before a restart)."""
        self._floor = max(self._floor, version)

    def check_fresh(self, now: int) -> GlobalConf:
        """The held configuration, or :class:`OutdatedGlobalConf` when none or expired at ``now``
        (message processing must stop)."""
        conf = self._current
        if conf is None:
            raise OutdatedGlobalConf("no global configuration has been downloaded yet")
        if conf.is_expired(now):
            raise OutdatedGlobalConf(
                f"global configuration version {conf.version} expired at {conf.expires_at}",
                internal=f"held configuration expired {now - conf.expires_at} s ago; "
                "check that the central server is reachable",
            )
        return conf

    def update(self, data: bytes, now: int) -> bool:
        """Accept ``data`` if it is trustworthy; True when it carries a new version.

        A refresh (same version and content, later ``generated_at``) replaces the held bytes and
        returns False. Anything refused raises a :class:`GlobalConfError` and keeps the old one.
        """
        return self._adopt(self._verified(data, now, allow_expired=False), data)

    def load_local(self, data: bytes, now: int) -> bool:
        """Adopt a configuration this server persisted: checked like :meth:`update` except for
        expiry, so that an expired one still guards against rollback (``check_fresh`` refuses to
        use it)."""
        return self._adopt(self._verified(data, now, allow_expired=True), data)

    def _verified(self, data: bytes, now: int, *, allow_expired: bool) -> GlobalConf:
        # (1) the JWS verifies against a verification certificate of the anchor
        payload = self._verify_signature(data)
        # (2) the payload parses as a global configuration
        conf = GlobalConf.from_json(payload)
        # (3) instance equals the anchor's
        if conf.instance != self._anchor.instance:
            raise GlobalConfError(
                f"global configuration is for instance {conf.instance!r}, "
                f"the anchor for {self._anchor.instance!r}"
            )
        # (4) version not lower than the held one, nor than the floor; an equal version must not
        # change content
        self._check_version(conf)
        # (5) not already expired at now (except when reloading our own persisted copy)
        if not allow_expired and conf.is_expired(now):
            raise GlobalConfExpired(
                f"global configuration version {conf.version} expired at {conf.expires_at}"
            )
        # (6) generated_at not absurdly in the future
        if conf.generated_at > now + MAX_FUTURE_SKEW:
            raise GlobalConfError(
                f"global configuration was generated {conf.generated_at - now} s in the future; "
                "check the clocks of this server and the central server"
            )
        return conf

    def _check_version(self, conf: GlobalConf) -> None:
        held = self._current
        if held is not None and conf.version < held.version:
            raise GlobalConfRollback(
                f"global configuration version {conf.version} is older than the held "
                f"version {held.version} (rollback refused)"
            )
        if conf.version < self._floor:
            raise GlobalConfRollback(
                f"global configuration version {conf.version} is older than version "
                f"{self._floor}, the highest this server has had in force (rollback refused)"
            )
        if held is None or conf.version > held.version:
            return
        if not conf.same_content(held):
            raise GlobalConfEquivocation(
                f"global configuration version {conf.version} was signed with different content "
                "than the held one (refused)"
            )

    def _verify_signature(self, data: bytes) -> bytes:
        try:
            token = data.strip().decode("ascii")
            return jws.verify(token, self._anchor.key_for).payload
        except UnicodeDecodeError:
            raise GlobalConfSignatureError("global configuration is not a compact JWS") from None
        except ExchangeError as exc:
            raise GlobalConfSignatureError(
                f"global configuration signature refused: {exc.message}"
            ) from None

    def _adopt(self, conf: GlobalConf, data: bytes) -> bool:
        held = self._current
        if held is not None and conf.version == held.version:
            if conf.generated_at > held.generated_at:
                self._current, self._current_bytes = conf, data
            return False
        self._current, self._current_bytes = conf, data
        return True


def load_stored(anchor: Path, state: Path, now: int) -> GlobalConf | None:
    """The global configuration a security server persisted at ``state``, verified against the
    anchor file like :meth:`TrustedGlobalConf.load_local` (so it may be expired); None if the
    server has never stored one."""
    try:
        data = state.read_bytes()
    except OSError:
        return None
    trusted = TrustedGlobalConf(Anchor.load(anchor), initial=data, now=now)
    assert trusted.current is not None  # load_local adopts into an empty state or raises
    return trusted.current
