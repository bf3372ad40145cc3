"""``exchange policy explain --config``: the policy directory comes from a server's TOML file."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from exchange.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _server_toml(tmp_path: Path, policy_dir: Path | None) -> Path:
    lines = [
        'server_id = "PS/GOV/MOI/ss1"',
        "[keys]",
        'auth_key = "a.pem"',
        'auth_cert = "a.pem"',
        'signing = [{ member = "PS/GOV/MOI", key = "s.pem", cert = "s.pem" }]',
    ]
    if policy_dir is not None:
        lines += ["[policy]", f'dir = "{policy_dir}"']
    path = tmp_path / "server.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _explain(config: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main,
        [
            "policy", "explain", "--config", str(config),
            "--client", "PS/GOV/PALPOST/unified-window",
            "--service", "PS/GOV/MOI/population-registry/persons",
            *extra,
        ],
    )  # fmt: skip
    return result.exit_code, result.output


def test_explain_with_server_config_allows_and_names_the_grant(tmp_path: Path) -> None:
    config = _server_toml(tmp_path, ROOT / "exchange" / "demo" / "policies" / "MOI")
    code, out = _explain(config, "--path", "/408857175", "--purpose", "citizen-service")
    assert code == 0, out
    assert "ALLOWED" in out and "palpost-window" in out and "population-registry.toml:10" in out


def test_explain_with_server_config_denies_with_exit_1(tmp_path: Path) -> None:
    config = _server_toml(tmp_path, ROOT / "exchange" / "demo" / "policies" / "MOI")
    code, out = _explain(config, "--path", "/408857175/family", "--purpose", "citizen-service")
    assert code == 1, out
    assert "DENIED" in out


def test_explain_with_server_config_without_policy_dir_is_a_usage_error(tmp_path: Path) -> None:
    code, out = _explain(_server_toml(tmp_path, None), "--path", "/1")
    assert code == 2
    assert "names no policy directory" in out
