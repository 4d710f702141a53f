"""The CLUSTERIP backend on Debian's real 6.1 kernel under qemu: the seed's cluster, then a takeover.

Inside the guest (tests/lab/qemu_clusterip_cluster_guest.py): 4 host namespaces with the seed's
rule (tcp dport 22, hashmode sourceip, total-nodes 4, hash-init 0) installed and driven by
ClusterIPBackend, 200 client sources without a static neighbour entry. Shown: every source is
answered, and accepted (conntrack), by exactly the host controller.core.hashing.clusterip_bucket
predicts; revoking bucket 2 on h2 and granting it on h1 through /proc moves exactly bucket 2's
sources; a restarted driver adopts the kernel's ownership and rewrites nothing; the dead-man switch
(xt_recent in the raw table) keeps a host silent until armed, lets it serve while refreshed and
silences it once refreshes stop; remove() deletes the rule and with it the /proc file. Skips only
if qemu cannot start at all.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from clusterlab.qemu import GuestUnavailable, check_qemu, prepare, run_in_guest

from controller.core.hashing import clusterip_bucket

# TCG on a shared 2-core machine: the guest run takes 2-6 minutes (many python starts in the guest)
pytestmark = [pytest.mark.lab, pytest.mark.qemu, pytest.mark.timeout(1500)]

GUEST = Path(__file__).with_name("qemu_clusterip_cluster_guest.py")


def run_guest(bench: int = 0, timeout_s: float = 1200) -> tuple[dict[str, Any], float, float]:
    """(observations, boot s, total s); skips only when qemu cannot start."""
    try:
        check_qemu()
    except GuestUnavailable as exc:
        print(f"qemu unavailable: {exc}")
        pytest.skip(f"qemu cannot start: {exc}")
    image = prepare()
    args = f" --bench {bench}" if bench else ""
    result = run_in_guest(f'set -eu\nexec "$CIPQ_PYTHON" {GUEST}{args}\n', timeout_s=timeout_s, image=image,
                          cpus=2)
    assert result.returncode == 0, (
        f"guest failed ({result.returncode}):\n{result.stderr[-3000:]}\n{result.console[-2000:]}"
    )
    print(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1]), result.boot_seconds, result.total_seconds


@pytest.fixture(scope="module")
def guest() -> dict[str, Any]:
    obs, boot, total = run_guest()
    print(f"\nqemu guest: boot {boot:.1f} s, total {total:.1f} s, drivers started in {obs['driver_start_s']} s")
    return obs


def _report(name: str, result: dict[str, Any]) -> None:
    print(f"clusterip {name}: tcp matched {result['matched']}/{result['total']}, "
          f"accepted by exactly the predicted host {result['accepted_once']}/{result['total']}")


def test_seed_rules_installed_and_every_source_on_its_predicted_host(guest: dict[str, Any]) -> None:
    assert guest["prereq"] == {f"h{k}": [] for k in range(1, 5)}
    assert {h: r["held"] for h, r in guest["install"].items()} == {"h1": [1], "h2": [2], "h3": [3], "h4": []}
    assert guest["h4_grant"]["held"] == [4]
    # the seed's rule (plus -i, which 6.1 requires); h4 installed with local node 1 behind the hold
    assert ("-A INPUT -d 198.18.0.100/32 -i eth0 -p tcp -m tcp --dport 22 -j CLUSTERIP --new --hashmode sourceip "
            "--clustermac 01:00:5E:41:9E:A0 --total-nodes 4 --local-node 1 --hash-init 0") in guest["rules_h4"]
    assert ":hold" not in guest["rules_h4"]
    initial = guest["initial"]
    _report("initial", initial)
    assert initial["problems"] == []
    assert initial["matched"] == initial["total"] == 200
    assert initial["accepted_once"] == 200
    assert "01:00:5e:41:9e:a0" in guest["neigh"].lower(), guest["neigh"]
    # the prediction really is clusterip_bucket (not another backend's hash)
    for src, host in initial["answers"].items():
        assert host == f"h{clusterip_bucket(ipaddress.IPv4Address(src), 4, 0, 'sourceip')}"


def test_takeover_through_proc_moves_exactly_that_bucket(guest: dict[str, Any]) -> None:
    assert guest["revoke_h2"]["held"] == [] and guest["revoke_h2_again"]["held"] == []
    assert guest["grant_h1"]["held"] == [1, 2] and guest["grant_h1_again"]["held"] == [1, 2]
    print(f"clusterip /proc grant {guest['grant_h1']['ms']:.3f} ms, revoke {guest['revoke_h2']['ms']:.3f} ms (TCG)")
    takeover = guest["takeover"]
    _report("after takeover", takeover)
    assert takeover["problems"] == [] and takeover["accepted_once"] == 200
    before, after = guest["initial"]["answers"], takeover["answers"]
    moved = {s for s in before if before[s] != after[s]}
    bucket2 = {s for s in before if clusterip_bucket(ipaddress.IPv4Address(s), 4, 0, "sourceip") == 2}
    assert moved == bucket2 and all(after[s] == "h1" for s in moved)


def test_restart_adopts_and_remove_cleans(guest: dict[str, Any]) -> None:
    assert guest["restart_install"]["held"] == [1, 2]
    assert guest["restart_rules_unchanged"]
    _report("after restart", guest["after_restart"])
    assert guest["after_restart"]["matched"] == 200 and guest["after_restart"]["accepted_once"] == 200
    assert all(r["ok"] for r in guest["remove"].values()), guest["remove"]
    assert guest["proc_after_remove"] == ["", "", "", ""]


def test_deadman_switch_with_xt_recent_on_6_1(guest: dict[str, Any]) -> None:
    assert guest["deadman_prereq"] == []  # Debian's 6.1 has xt_recent and the raw table
    assert guest["deadman_install"]["held"] == [1, 2]  # adopted as before
    assert "-m recent ! --rcheck --seconds 1 --name CIF-unix0-alive" in guest["deadman_rules"], guest["deadman_rules"]
    for phase in ("deadman_unarmed", "deadman_armed", "deadman_halted"):
        _report(phase, guest[phase])
        assert guest[phase]["problems"] == [] and guest[phase]["matched"] == 200, guest[phase]["problems"]
    assert guest["deadman_halt"]["refreshes"] > 0 and guest["deadman_halt"]["failures"] == 0
