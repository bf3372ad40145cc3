"""Health's services, adapters on the SDK.

- Vaccination records (``PS/GOV/MOH/health-records``): ``store`` keeps synthetic records in
  SQLite, keyed by national ID; ``app`` serves them as REST (``GET /vaccinations/{national_id}``,
  ``POST /vaccinations``) and SOAP (``getVaccinations``). It exists to show that
  :mod:`adapters.sdk` is not shaped around the population registry.
- Health insurance (``PS/GOV/MOH/health-insurance``): ``insurance_store`` and ``insurance``
  answer ``GET /status/{national_id}``, the service the post office's window asks.
"""
