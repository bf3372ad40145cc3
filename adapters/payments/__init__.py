"""Finance's payment services (``PS/GOV/MOF/payments``): an adapter on the SDK.

``money`` holds exact amounts, ``store`` the fees, receipts and refunds in SQLite (idempotent,
numbered without gaps, append-only), ``app`` serves them as the services ``schedule``, ``fees``
and ``receipts``, and signs each receipt and refund as a document an auditor verifies offline.
"""
