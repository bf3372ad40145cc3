"""Access policies (docs/design.md §7): deny by default, per-provider grants from TOML files.

- :mod:`~exchange.policy.model`: grants, policy sets, requests, decisions, ``UnsafeAllowAll``;
- :mod:`~exchange.policy.loader`: reading and checking a policy directory, ``PolicyStore``;
- :mod:`~exchange.policy.evaluate`: deciding and explaining, path normalisation;
- :mod:`~exchange.policy.fields`: response field filtering (data minimisation);
- :mod:`~exchange.policy.lint`: overlapping and dead grants;
- :mod:`~exchange.policy.audit`: the signed trail of policy changes (import it directly).

Only the loader and the audit trail do IO.
"""

from exchange.policy.evaluate import BadPath, evaluate, explain, request_segments
from exchange.policy.fields import compile_fields, filter_fields, parse_field_path
from exchange.policy.lint import Finding, lint
from exchange.policy.loader import (
    PolicyStore,
    build_policy_set,
    load_policy_dir,
    parse_policy_file,
    policy_version,
)
from exchange.policy.model import (
    Decision,
    Grant,
    LocalGroup,
    LocalGroupId,
    PathPattern,
    Policy,
    PolicyError,
    PolicyRequest,
    PolicySet,
    Rate,
    UnsafeAllowAll,
)

__all__ = [
    "BadPath",
    "Decision",
    "Finding",
    "Grant",
    "LocalGroup",
    "LocalGroupId",
    "PathPattern",
    "Policy",
    "PolicyError",
    "PolicyRequest",
    "PolicySet",
    "PolicyStore",
    "Rate",
    "UnsafeAllowAll",
    "build_policy_set",
    "compile_fields",
    "evaluate",
    "explain",
    "filter_fields",
    "lint",
    "load_policy_dir",
    "parse_field_path",
    "parse_policy_file",
    "policy_version",
    "request_segments",
]
