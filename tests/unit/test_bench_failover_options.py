"""bench_failover's --nice option: parsed strictly, handed to the lab, named in the rows.

Why: a row measured with priorities must never be mistaken for the plain profile's row, and a typo in
a part's name must not silently run the plain set-up.
"""

from __future__ import annotations

import argparse

import bench_failover  # deploy/lab/bench_failover.py (tests/conftest.py puts deploy/lab on sys.path)
import pytest
from clusterlab.stack import StackOptions


def test_nice_spec_is_parsed_and_named_in_the_row() -> None:
    nice = bench_failover.parse_nice("zk=-10,hooks=-10,controllers=-10,sshd=-5")
    opts = bench_failover.nice_options(nice)
    assert opts == {"zk_nice": -10, "hook_nice": -10, "controller_nice": -10, "sshd_nice": -5}
    assert StackOptions(**opts).priorities() == "nice ZK -10, hooks -10, controllers -10, sshd -5"  # type: ignore[arg-type]
    assert bench_failover.system_name("fast", nice) == "ours fast (nice ZK -10, hooks -10, controllers -10, sshd -5)"
    assert bench_failover.system_name("fast") == "ours fast"


@pytest.mark.parametrize("bad", ["zookeeper=-10", "zk=-30", "zk", "zk=x"])
def test_a_wrong_nice_spec_is_a_usage_error(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        bench_failover.parse_nice(bad)
