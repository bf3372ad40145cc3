"""The unified window: the post-office clerk's web app, a consumer of the exchange.

It serves citizens at the counter on behalf of four ministries (Interior, Health, Telecom,
Finance), talking only to the post office's own security server as the client subsystem
``PS/GOV/PALPOST/unified-window``. Clerk accounts, sessions and the clerk's history live in one
SQLite file in the app's state directory.
"""
