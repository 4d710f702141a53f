"""The keepalived baseline harness (deploy/lab/clusterlab/keepalived.py) measures something sane.

Short on purpose (2 trials per fault, tuned advert_int 0.1): it proves the harness works and cleans
up; the real figures come from deploy/lab/bench_failover.py with >= 20 trials.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from clusterlab import keepalived, netns

pytestmark = pytest.mark.lab

TAG = "cifka"


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the keepalived lab needs root (network namespaces)"
    if shutil.which("ip") is None or shutil.which("bridge") is None:
        return "the keepalived lab needs iproute2"
    return None


@pytest.fixture(scope="module")
def lab() -> keepalived.KeepalivedLab:
    why = lab_unavailable()
    if why is None and shutil.which("keepalived") is None and not os.path.exists(keepalived.KEEPALIVED):
        why = "keepalived is not installed: apt-get install -y keepalived (deploy/setup.sh does)"
    if why:
        pytest.skip(why)
    netns.remove_stale(TAG)
    with keepalived.KeepalivedLab(keepalived.KeepalivedOptions(advert_int=0.1)) as running:
        yield running  # type: ignore[misc]


def test_config_is_valid_keepalived_for_both_advert_intervals(lab: keepalived.KeepalivedLab) -> None:
    for advert in (1.0, 0.1):
        lab.options = dataclasses.replace(lab.options, advert_int=advert)
        try:
            text = lab.config_text("h2")
        finally:
            lab.options = dataclasses.replace(lab.options, advert_int=0.1)
        assert f"advert_int {advert:g}\n" in text and "vrrp_version 3" in text and "unicast_peer" in text
        path = lab.dir / f"check-{advert:g}.conf"
        path.write_text(text)
        proc = subprocess.run([keepalived.KEEPALIVED, "-t", "-f", str(path)], capture_output=True, text=True,
                              check=False, timeout=30)
        assert proc.returncode == 0, proc.stderr


def test_master_holds_the_vip_alone_and_answers_every_client(lab: keepalived.KeepalivedLab) -> None:
    assert lab.vip_holders() == ["h1"]
    assert set(lab.answers(lab.watch_sources()).values()) == {"h1"}


@pytest.mark.parametrize("fault", ["crash", "hung"])
def test_takeover_is_measured_for_each_trial(lab: keepalived.KeepalivedLab, fault: str) -> None:
    trials = keepalived.run_trials(lab, fault, 2)
    for t in trials:
        assert t.new_master not in (None, "h1"), t
        assert t.per_source_s, t
        assert t.takeover_s is not None, t
        # VRRP needs >= 3 adverts (crash) or the checker's fall (hung); below 4 s on any sane day
        assert 0.05 < t.takeover_s < 4.0, t
    assert lab.vip_holders() == ["h1"]  # restored and re-stabilised on the master


def test_keepalived_killed_leaves_the_vip_on_two_hosts(lab: keepalived.KeepalivedLab) -> None:
    trials = keepalived.run_trials(lab, "kill", 2)
    assert all(t.vip_holders >= 2 for t in trials), trials  # the split keepalived cannot avoid
    assert lab.vip_holders() == ["h1"]


def test_down_removes_everything() -> None:
    if lab_unavailable() or not os.path.exists(keepalived.KEEPALIVED):
        pytest.skip("needs root and keepalived")
    lab = keepalived.KeepalivedLab(keepalived.KeepalivedOptions(advert_int=0.1))
    lab.up()
    prefix = lab.topo.prefix
    pids = [p.pid for h in lab.hosts.values() for p in (h.keepalived, h.checker, h.sshd.proc) if p is not None]
    workdir = lab.dir
    lab.down()
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(prefix + "-")]
    assert not workdir.exists()
    for pid in pids:  # gone (or a zombie of a reaped-later Popen)
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"
