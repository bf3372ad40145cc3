"""Telecom's SIM registry (``PS/GOV/MTIT/sim-registry``): an adapter on the SDK.

``store`` keeps SIM registrations in SQLite (one registration per number, a few per person),
``app`` serves them as the service ``sims``: ``POST /sims`` registers a SIM card to a citizen,
recording the clerk who checked their identity, and ``GET /sims?national_id=`` lists them.
"""
