"""Health's vaccination records (``PS/GOV/MOH/health-records``): an adapter on the SDK.

``store`` keeps synthetic vaccination records in SQLite, keyed by national ID; ``app`` serves
them as REST (``GET /vaccinations/{national_id}``, ``POST /vaccinations``) and SOAP
(``getVaccinations``). It exists to show that :mod:`adapters.sdk` is not shaped around the
population registry.
"""
