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

    #: Connection attempts per second over all sources. Every attempt costs the target sshd a
    #: fork+exec (~6 ms of CPU): hundreds per second would overload the 2-core lab and measure that.
    MAX_RATE = 100.0

    def __init__(self, stack: Any, sources: Sequence[str], interval_s: float = 0.02, timeout_s: float = 0.5,
                 duration_s: float = 120.0, max_sources: int = 8, raw: bool = False) -> None:
        self.stack = stack
        # An evenly spread sample keeps the rate per source high enough for a fine timeline.
        step = max(1, len(sources) // max_sources)
        self.sources = list(sources)[::step][:max_sources]
        self.interval_s = max(interval_s, len(self.sources) / self.MAX_RATE)
        self.timeout_s = timeout_s
        self.duration_s = duration_s
        self.proc: subprocess.Popen[str] | None = None
        self.started = 0.0
        #: after stop(): per source, how many attempts ended in each state (host or "!reason")
        self.outcomes: dict[str, dict[str, int]] = {}
        #: with ``raw``, after stop(): per source every attempt as (start time, outcome)
        self.raw = raw
        self.results: dict[str, list[tuple[float, str]]] = {}

    def __enter__(self) -> BannerWatch:
        self.proc = self.stack.popen_client(
            "clusterlab.sshclient", "watch", "--vip", self.stack.topo.vip, "--sources", ",".join(self.sources),
            "--interval", str(self.interval_s), "--timeout", str(self.timeout_s), "--duration", str(self.duration_s),
            *(["--raw"] if self.raw else []))
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
        self.outcomes = {src: dict(v.get("outcomes", {})) for src, v in data.items()}
        self.results = {src: [(float(t), str(o)) for t, o in v.get("results", [])] for src, v in data.items()}
        return {src: [(float(t), str(s)) for t, s in v["transitions"]] for src, v in data.items()}

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None


def recovery(
    transitions: dict[str, list[tuple[float, str]]], fault_at: float, bad_hosts: Iterable[str] = ()
) -> list[SourceRecovery]:
    """Per source: how long after ``fault_at`` until a lasting good answer (not from ``bad_hosts``).

    Times are attempt start times. Recovery is the first answer from a good host after the source's
    outage began (an answer from a bad host, the victim, counts as outage). A source still answered
    by a bad host, or refused, at the end has not recovered; a final timeout alone does not undo a
    recovery (a survivor's slow banner on a loaded machine).
    """
    bad = set(bad_hosts)

    def is_bad(state: str) -> bool:
        return state.startswith("!") or state in bad

    results = []
    for source, trans in sorted(transitions.items()):
        before = None
        before_t = float("-inf")  # start of the last good answer before the fault
        for t, state in trans:
            if t <= fault_at and not state.startswith("!"):
                before = state
                if not is_bad(state):
                    before_t = t
        final = trans[-1][1] if trans else "!none"
        if not trans or final in bad or (final.startswith("!") and "timeout" not in final):
            # Still answered by the victim, or refused/reset at the end: not recovered. A timeout at
            # the end is a slow survivor on a loaded machine, judged by the answers before it.
            results.append(SourceRecovery(source, before, None, None, float("inf")))
            continue
        # The first answer from a good host after the last bad answer that preceded it: later
        # slow banners on the survivor (a loaded lab) are glitches, not part of the takeover.
        first_bad = next((i for i, (t, state) in enumerate(trans) if is_bad(state) and t >= before_t), None)
        if first_bad is None:
            results.append(SourceRecovery(source, before, trans[-1][1], 0.0, 0.0))
            continue
        first_good = next((i for i in range(first_bad, len(trans)) if not is_bad(trans[i][1])), None)
        if first_good is None:
            results.append(SourceRecovery(source, before, None, None, float("inf")))
            continue
        recovered = max(0.0, trans[first_good][0] - fault_at)
        after = next(state for _, state in reversed(trans) if not is_bad(state))
        results.append(SourceRecovery(source, before, after, recovered, recovered))
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
