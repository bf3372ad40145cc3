"""What a certification authority's backup holds: its directory, as ``exchange ca init`` and
the CA's commands keep it: the CA key (sealed, whatever its passphrase) and certificate, an
online copy of the register of issued certificates and their revocations (what the OCSP
responder answers from), and any other file there (a delegated OCSP responder's key is sealed
too). SQLite's own side files (``-wal``, ``-shm``, ``-journal``) are not copied: the online
copy holds what they held.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from exchange.backup.manifest import Manifest
from exchange.backup.writer import BackupWriter, Placer, is_sqlite
from exchange.errors import ConfigurationError
from exchange.trust.ca import CERT_FILE, KEY_FILE
from exchange.trust.keys import load_certificate
from exchange.trust.validation import name_text

SIDE_FILES: Final = ("-wal", "-shm", "-journal", ".lock")


def backup_ca(ca_dir: Path, output: Path, passphrase: bytes, *, now: int) -> Manifest:
    """Write the backup of the CA directory ``ca_dir`` to ``output``."""
    base = ca_dir.resolve()
    for name in (KEY_FILE, CERT_FILE):
        if not (base / name).is_file():
            raise ConfigurationError(f"{base} is not a CA directory: it has no {name}")
    if output.absolute().parent.resolve().is_relative_to(base):
        raise ConfigurationError(f"write the backup outside the directory it backs up ({base})")
    identity = name_text(load_certificate(base / CERT_FILE).subject)
    files = _files(base)
    with BackupWriter(output, passphrase, "ca", identity) as writer:
        placer = Placer(writer, base)
        for path in files:
            if is_sqlite(path):
                placer.database(path, path)
            else:
                placer.file(path, path)
        return writer.finish(None, now=now)


def _files(base: Path) -> list[Path]:
    found = []
    for root, dirs, names in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not (Path(root) / d).is_symlink())
        for name in sorted(names):
            path = Path(root) / name
            if name.endswith(SIDE_FILES) or not path.is_file():
                continue
            found.append(path)
    return found
