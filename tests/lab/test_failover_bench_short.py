"""Short failover benchmark (CI variant of deploy/lab/bench_failover.py, issue 11).

Two trials of each fault (sshd hung, host crash) for our ``default`` profile and one for keepalived
tuned (advert_int 0.1), measured by the benchmark's own code. It FAILS if exclusivity is ever
violated in our rows: any UDP answer from two hosts, or any kernel sample with a bucket in two live
hosts' nft sets. Timing targets are not judged here (a few trials on a shared CI machine prove
nothing about a p99); they are the full benchmark's job. Every trial must still recover, or the
run measured nothing.
"""

from __future__ import annotations

import bench_failover  # deploy/lab/bench_failover.py (tests/conftest.py puts deploy/lab on sys.path)
import pytest
from clusterlab import benchtable
from conftest import lab_unavailable

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

FAULTS = ["sshd hung", "host crash"]


def test_default_profile_never_breaks_exclusivity_and_recovers() -> None:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    rows = bench_failover.ours_rows("default", FAULTS, trials=2)
    print("\n" + benchtable.table(rows))
    assert [r.fault for r in rows] == FAULTS and all(len(r.trials) == 2 for r in rows)
    assert benchtable.violations(rows) == []
    for row in rows:
        for t in row.trials:
            assert t.error is None, t.error
            assert t.kernel_rounds and t.kernel_rounds >= 10, t  # the kernels were really read
            assert t.sweeps, t
            assert t.takeover_s is not None, (row.fault, t.per_source)
            assert t.sessions_broken == 0, t


def test_keepalived_tuned_rows_are_measured_by_the_same_code() -> None:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    from clusterlab import keepalived

    if not keepalived.Path(keepalived.KEEPALIVED).exists():
        pytest.skip("keepalived is not installed: apt-get install -y keepalived")
    rows = bench_failover.keepalived_rows(0.1, FAULTS, trials=1)
    print("\n" + benchtable.table(rows))
    assert [(r.system, r.fault) for r in rows] == [(benchtable.TUNED, f) for f in FAULTS]
    for row in rows:
        (t,) = row.trials
        assert t.error is None and t.takeover_s is not None, t
        assert t.vip_holders == 1, t  # a crash or a hang moves the VIP; only a killed keepalived splits it
