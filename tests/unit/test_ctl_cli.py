"""clusterip-ctl through click's CliRunner: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import ipaddress
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from controller.core.hashing import bucket_for
from controller.core.model import HashSettings
from controller.ctl import cmd_config
from controller.ctl.cli import cli, main

ROOT = Path(__file__).resolve().parents[2]
SEED_CONFIG = ROOT / "deploy" / "examples" / "seed-unix0.yaml"
SEED_RULES = sorted((ROOT / "tests" / "fixtures" / "seed").glob("unix*.rules"))


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin)


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


# --------------------------------------------------------------------------- config check


def test_config_check_valid_prints_one_line_per_cluster() -> None:
    result = run("config", "check", str(SEED_CONFIG))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "unix0: clusterip VIP 129.65.158.160 on eth0, tcp port 22, 4 buckets, hash sourceip init 0, "
        "MAC 01:00:5E:41:9E:A0, homes unix1[1] unix2[2] unix3[3] unix4[4]"
    ]


def test_config_check_invalid_prints_each_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = SEED_CONFIG.read_text().replace("buckets: 4", "buckets: 17").replace('"01:00:5E', '"00:00:5E')
    bad.write_text(text)
    result = run("config", "check", str(bad))
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) >= 2
    assert all(line.startswith(f"{bad}: clusters[0].") for line in lines), lines
    assert any(line.startswith(f"{bad}: clusters[0].buckets: 17 is above the clusterip limit of 16; ")
               for line in lines)
    assert result.stdout == ""
    no_traceback(result)


def test_config_check_missing_file_and_syntax_error(tmp_path: Path) -> None:
    missing = run("config", "check", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2
    assert missing.stderr == f"{tmp_path / 'nope.yaml'}: cannot read: no such file; check the path\n"
    broken = tmp_path / "broken.yaml"
    broken.write_text("clusters:\n  - name: [unix0\n")
    result = run("config", "check", str(broken))
    assert result.exit_code == 2 and result.stderr.startswith(f"{broken}: line ")
    no_traceback(result)


def test_unexpected_error_is_exit_70_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(path: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cmd_config, "load_config", explode)
    result = run("config", "check", str(SEED_CONFIG))
    assert result.exit_code == 70
    assert result.stderr.startswith("clusterip-ctl: internal error: RuntimeError: boom; please report")
    no_traceback(result)


def test_main_entry_point_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as ok:
        main(["config", "check", str(SEED_CONFIG)])
    assert ok.value.code == 0
    with pytest.raises(SystemExit) as bad:
        main(["config", "check", str(tmp_path / "missing.yaml")])
    assert bad.value.code == 2
    with pytest.raises(SystemExit) as usage:
        main(["no-such-command"])
    assert usage.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for name in ("config", "import", "which"):
        assert f"  {name} " in result.stdout


# --------------------------------------------------------------------------- import iptables-save


def test_import_seed_to_stdout_then_check(tmp_path: Path) -> None:
    result = run("import", "iptables-save", *map(str, SEED_RULES), "--interface", "eth0", "--name", "unix0")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = tmp_path / "unix0.yaml"
    out.write_text(result.stdout)
    check = run("config", "check", str(out))
    assert check.exit_code == 0, check.output
    assert "homes unix1[1] unix2[2] unix3[3] unix4[4]" in check.stdout


def test_import_without_interface_warns_and_check_flags_it(tmp_path: Path) -> None:
    out = tmp_path / "start.yaml"
    result = run("import", "iptables-save", *map(str, SEED_RULES), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "warning: generated config: clusters[0].interface: still the placeholder" in result.stderr
    assert f"wrote {out}" in result.stderr
    check = run("config", "check", str(out))
    assert check.exit_code == 2
    assert check.stderr.startswith(f"{out}: clusters[0].interface: still the placeholder")


def test_import_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "exists.yaml"
    out.write_text("keep me\n")
    refused = run("import", "iptables-save", *map(str, SEED_RULES), "-o", str(out))
    assert refused.exit_code == 2 and "pass --force" in refused.stderr
    assert out.read_text() == "keep me\n"
    forced = run("import", "iptables-save", *map(str, SEED_RULES), "-o", str(out), "--force", "--interface", "eth0")
    assert forced.exit_code == 0 and "clusters:" in out.read_text()


def test_import_disagreeing_hosts_exit_3_and_write_nothing(tmp_path: Path) -> None:
    files = []
    for path in SEED_RULES:
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        files.append(str(copy))
    bad = tmp_path / "unix4.rules"
    bad.write_text(bad.read_text().replace("01:00:5E:41:9E:A0", "01:00:5E:41:9E:A4"))
    result = run("import", "iptables-save", *files)
    assert result.exit_code == 3
    assert result.stdout == ""
    assert "hosts disagree on the cluster MAC" in result.stderr
    assert "no config written" in result.stderr
    no_traceback(result)


def test_import_from_stdin_needs_a_host_id() -> None:
    text = SEED_RULES[0].read_text()
    assert run("import", "iptables-save", stdin=text).exit_code == 2
    result = run("import", "iptables-save", "--host-id", "alpha", "--interface", "eth0", stdin=text)
    assert result.exit_code == 0, result.output
    assert '{id: "alpha", ssh: "alpha:22", home_buckets: [1, 2, 3, 4]}' in result.stdout  # 2..4 unserved
    assert result.stderr.count("served by nobody") == 3


def test_import_host_ids_must_match_files() -> None:
    result = run("import", "iptables-save", *map(str, SEED_RULES), "--host-id", "a")
    assert result.exit_code == 2 and "1 --host-id for 4 files" in result.stderr


def test_import_unreadable_file(tmp_path: Path) -> None:
    result = run("import", "iptables-save", str(tmp_path / "gone.rules"))
    assert result.exit_code == 2 and "cannot read" in result.stderr
    no_traceback(result)


# --------------------------------------------------------------------------- which


@pytest.mark.parametrize("address", ["198.18.0.1", "192.0.2.77", "129.65.1.2"])
def test_which_with_config_names_the_home_host(address: str) -> None:
    expected = bucket_for("clusterip", ipaddress.ip_address(address), 4, HashSettings(mode="sourceip"))
    result = run("which", address, "--config", str(SEED_CONFIG), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["bucket"] == expected and doc["home"] == f"unix{expected}"
    assert (doc["backend"], doc["buckets"], doc["address"], doc["cluster"]) == ("clusterip", 4, address, "unix0")
    text = run("which", address, "--config", str(SEED_CONFIG), "--cluster", "unix0")
    assert text.exit_code == 0
    assert text.stdout.startswith(f"{address}: bucket {expected} of 4 ")
    assert text.stdout.rstrip().endswith(f"home host unix{expected}")


@pytest.mark.parametrize("backend", ["xt_cluster", "nftables"])
@pytest.mark.parametrize("address", ["198.18.0.7", "2001:db8::7"])
def test_which_with_backend_flags(backend: str, address: str) -> None:
    result = run("which", address, "--backend", backend, "--buckets", "8", "--seed", "0xdeadbeef", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    expected = bucket_for(backend, ipaddress.ip_address(address), 8, HashSettings(seed=0xDEADBEEF))  # type: ignore[arg-type]
    assert doc["bucket"] == expected and doc["backend"] == backend and doc["buckets"] == 8
    assert doc["home"] is None


def test_which_clusterip_with_ports() -> None:
    args = ["which", "198.18.2.3", "--backend", "clusterip", "--buckets", "16", "--hash-mode",
            "sourceip-sourceport-destport", "--hash-init", "5", "--sport", "40000", "--dport", "22", "--json"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    settings = HashSettings(mode="sourceip-sourceport-destport", hash_init=5)
    expected = bucket_for("clusterip", ipaddress.ip_address("198.18.2.3"), 16, settings, sport=40000, dport=22)
    assert json.loads(result.stdout)["bucket"] == expected


@pytest.mark.parametrize(("args", "expect"), [
    (["nonsense", "--backend", "xt_cluster", "--buckets", "4", "--seed", "1"], "is not an IPv4 or IPv6 address"),
    (["198.18.0.1"], "exactly one of --config FILE or --backend"),
    (["198.18.0.1", "--config", str(SEED_CONFIG), "--backend", "xt_cluster"], "exactly one of"),
    (["2001:db8::1", "--config", str(SEED_CONFIG)], "CLUSTERIP is IPv4 only"),
    (["2001:db8::1", "--backend", "clusterip", "--buckets", "4"], "CLUSTERIP is IPv4 only"),
    (["198.18.0.1", "--backend", "clusterip", "--buckets", "4", "--hash-mode", "sourceip-sourceport"],
     "pass --sport"),
    (["198.18.0.1", "--backend", "clusterip", "--buckets", "4", "--hash-mode", "sourceip-sourceport-destport",
      "--sport", "1"], "pass --dport"),
    (["198.18.0.1", "--backend", "clusterip", "--buckets", "4", "--sport", "1"], "drop --sport"),
    (["198.18.0.1", "--backend", "clusterip", "--buckets", "4", "--seed", "1"], "does not use --seed"),
    (["198.18.0.1", "--backend", "xt_cluster", "--buckets", "4"], "--seed S is required"),
    (["198.18.0.1", "--backend", "xt_cluster", "--buckets", "4", "--seed", "1", "--hash-init", "2"],
     "drop --hash-init"),
    (["198.18.0.1", "--backend", "xt_cluster", "--buckets", "40", "--seed", "1"], "use 1..32"),
    (["198.18.0.1", "--backend", "nftables", "--buckets", "4", "--seed", "banana"], "--seed 'banana' is not a number"),
    (["198.18.0.1", "--backend", "nftables", "--seed", "1"], "--buckets N is required"),
    (["198.18.0.1", "--config", str(SEED_CONFIG), "--seed", "1"], "--seed comes from the config"),
    (["198.18.0.1", "--config", str(SEED_CONFIG), "--cluster", "web"], "no cluster named 'web'"),
    (["198.18.0.1", "--backend", "xt_cluster", "--buckets", "4", "--seed", "1", "--cluster", "x"], "--cluster needs"),
])
def test_which_argument_errors_are_one_line_exit_2(args: list[str], expect: str) -> None:
    result = run("which", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and expect in result.stderr, result.stderr
    assert result.stderr.startswith("clusterip-ctl: error: ")
    no_traceback(result)


def test_which_with_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED_CONFIG.read_text().replace("backend: clusterip", "backend: clusterp"))
    result = run("which", "198.18.0.1", "--config", str(bad))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{bad}: clusters[0].backend: ") and "did you mean 'clusterip'" in result.stderr
