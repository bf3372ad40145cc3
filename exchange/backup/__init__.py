"""Backups of a security server, a central server and a CA, and restoring them.

A backup is one zip file (:mod:`exchange.backup.manifest`): every file the role needs, its
databases copied online (:mod:`exchange.backup.writer`), its private keys sealed and its
manifest authenticated with keys derived from the operator's passphrase
(:mod:`exchange.backup.sealing`). What each role's backup holds is in
:mod:`exchange.backup.server`, :mod:`exchange.backup.central` and :mod:`exchange.backup.ca`;
:mod:`exchange.backup.restore` refuses a damaged, altered or unsafe backup before it writes
anything, then unpacks all of it or nothing.
"""
