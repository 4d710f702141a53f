"""Measuring a failover from the clients' side.

A :class:`BannerWatch` keeps opening SSH connections (connect + banner) from a set of client sources
through the VIP while a fault happens, and records, per source, every change of who answered. From
that, :func:`recovery` computes per source how long after the fault a new SSH session could be
opened again, and on which host.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clusterlab.errors import LabError


@dataclass(frozen=True)
class SourceRecovery:
    source: str
    before: str | None  # host that answered before the fault
    after: str | None  # host that answers at the end
    recovered_s: float | None  # fault -> first lasting good answer; None: never recovered
    outage_s: float  # time without a good answer after the fault


class BannerWatch:
    """Runs ``clusterlab.sshclient watch`` in the client namespace (see LabStack.popen_client)."""

    def __init__(self, stack: Any, sources: Sequence[str], interval_s: float = 0.02, timeout_s: float = 0.5,
                 duration_s: float = 120.0) -> None:
        self.stack = stack
        self.sources = list(sources)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.duration_s = duration_s
        self.proc: subprocess.Popen[str] | None = None
        self.started = 0.0

    def __enter__(self) -> BannerWatch:
        self.proc = self.stack.popen_client(
            "clusterlab.sshclient", "watch", "--vip", self.stack.topo.vip, "--sources", ",".join(self.sources),
            "--interval", str(self.interval_s), "--timeout", str(self.timeout_s), "--duration", str(self.duration_s))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise LabError(f"banner watch did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.started = json.loads(line)["started"]
        return self

    def stop(self) -> dict[str, list[tuple[float, str]]]:
        if self.proc is None:
            raise LabError("banner watch is not running")
        proc, self.proc = self.proc, None
        out, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise LabError(f"banner watch failed: {err.strip()[-400:]}")
        data = json.loads(out.strip().splitlines()[-1])
        return {src: [(float(t), str(s)) for t, s in v["transitions"]] for src, v in data.items()}

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None


def recovery(
    transitions: dict[str, list[tuple[float, str]]], fault_at: float, bad_hosts: Iterable[str] = ()
) -> list[SourceRecovery]:
    """Per source: how long after ``fault_at`` until a lasting good answer (not from ``bad_hosts``)."""
    bad = set(bad_hosts)
    results = []
    for source, trans in sorted(transitions.items()):
        before = None
        for t, state in trans:
            if t <= fault_at and not state.startswith("!"):
                before = state
        after_fault = [(t, s) for t, s in trans if t > fault_at]
        last_state = trans[-1][1] if trans else "!none"
        good = not last_state.startswith("!") and last_state not in bad
        recovered: float | None = None
        outage = 0.0
        if good:
            # the first transition into the lasting good state, after the last bad one
            start = fault_at
            for t, s in after_fault:
                if s.startswith("!") or s in bad:
                    start = t
            firsts = [t for t, s in after_fault if t >= start and not s.startswith("!") and s not in bad]
            recovered = (firsts[0] - fault_at) if firsts and start > fault_at else 0.0
            if start > fault_at and firsts:
                outage = firsts[0] - fault_at
        else:
            outage = float("inf")
        results.append(SourceRecovery(source, before, last_state if good else None, recovered, outage))
    return results


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": float(len(values)),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise LabError(f"timed out after {timeout_s} s waiting for {what}")
