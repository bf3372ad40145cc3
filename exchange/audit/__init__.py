"""Auditor tooling: evidence bundles for one exchange, verified offline (DESIGN.md §8)."""
