"""Auditor tooling: evidence bundles for one exchange, verified offline (docs/design.md §8)."""
