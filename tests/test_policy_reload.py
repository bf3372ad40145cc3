"""Policy reloads never stop (issue 13, finding 6).

A policy file of 5,000 nested ``[`` made tomllib raise RecursionError: ``PolicyStore.reload``
let it out (it caught only PolicyError and OSError), the server's watcher task died, and later
valid edits were never applied, silently; ``exchange policy check`` ended in a traceback. Now any
failure of a reload keeps the policy in force, is logged, is kept for ``/health``, and raises a
PolicyError; the commands report such a file in one line with exit status 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange.cli.policy import group as policy_cli
from exchange.policy.loader import PolicyStore, load_policy_dir
from exchange.policy.model import PolicyError
from tests.test_policy import MOI_POLICY, write_policy

DEEP = "provider = 'PS/GOV/MOI'\nx = " + "[" * 5000 + "\n"
DEEP_TABLES = "provider = 'PS/GOV/MOI'\nx = " + "{a = " * 5000 + "\n"


@pytest.mark.parametrize("text", [DEEP, DEEP_TABLES], ids=["arrays", "inline-tables"])
def test_a_deeply_nested_file_is_a_policy_error(tmp_path: Path, text: str) -> None:
    write_policy(tmp_path, text)
    with pytest.raises(PolicyError, match="nested too deeply"):
        load_policy_dir(tmp_path)


@pytest.mark.parametrize("command", ["check", "lint"])
def test_policy_commands_report_it_in_one_line_with_exit_2(tmp_path: Path, command: str) -> None:
    write_policy(tmp_path, DEEP)
    result = CliRunner().invoke(policy_cli, [command, str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert (
        line == f"error: {tmp_path / 'moi.toml'}: TOML nested too deeply (arrays or inline tables)"
    )


def test_a_broken_reload_keeps_the_policy_and_shows_when(tmp_path: Path) -> None:
    path = write_policy(tmp_path)
    clock = [1_800_000_000.0]
    store = PolicyStore(tmp_path, now=lambda: clock[0])
    version = store.current.version
    assert store.health() == {
        "version": version,
        "last_reload_error": None,
        "last_reload_error_at": None,
    }
    path.write_text(DEEP)
    with pytest.raises(PolicyError):
        store.reload()
    assert store.current.version == version
    health = store.health()
    assert health["version"] == version
    assert "nested too deeply" in str(health["last_reload_error"])
    assert health["last_reload_error_at"] == "2027-01-15T08:00:00+00:00"
    # a later valid edit is applied, and the failure is gone from the health
    path.write_text(MOI_POLICY.replace('"benefits"', '"pensions"'))
    assert store.reload() is True
    assert store.current.version != version
    assert store.health()["last_reload_error"] is None


def test_an_unexpected_failure_of_a_reload_is_a_policy_error(tmp_path: Path) -> None:
    """Anything the reload raises (here a hook that fails with a bug of its own) keeps the
    policy in force and becomes a PolicyError kept for /health, never an exception that would end
    the caller's watch."""
    path = write_policy(tmp_path)

    def hook(old: object, new: object, outcome: object) -> None:
        raise KeyError("a bug while recording")

    store = PolicyStore(tmp_path, on_reload=hook)
    version = store.current.version
    path.write_text(MOI_POLICY + "# edited\n")
    with pytest.raises(PolicyError, match=r"recording it failed \(KeyError"):
        store.reload()
    assert store.current.version == version
    assert "KeyError" in str(store.health()["last_reload_error"])
