"""Failover benchmark results: trial records, the side-by-side table and the ours/keepalived ratios.

Why a module of its own: the benchmark runs in chunks (one system and fault per locked run on the
shared 2-core machine, each writing JSON), and the table is made afterwards from the merged JSON.
So formatting must not depend on a running lab, and it is pure enough to unit-test
(tests/unit/test_bench_table.py).

A *row* is one (system, fault) pair: ``ours default``, ``ours fast``, ``keepalived advert_int 1``,
``keepalived advert_int 0.1`` or ``static (no controller)`` against ``sshd hung``, ``host crash``,
``agent killed``... Rows are kept in the order they were first seen, so a new fault scenario (for
instance "failback with drain") is one more entry in bench_failover.SCENARIOS and shows up here
without any change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from clusterlab.measure import summary

#: The keepalived set-up our profiles are compared with (issue 11: "keepalived tuned").
TUNED = "keepalived advert_int 0.1"
#: ... and keepalived as usually configured (advert_int 1): a second ratio column.
PLAIN = "keepalived advert_int 1"
#: Not a fault: no fault for minutes on a saturated machine; its rows count false failovers (calm_table).
CALM = "no fault (load)"

#: Issue 11's p99 targets (seconds) per (system, fault); a row without one shows "-".
TARGETS: dict[tuple[str, str], float] = {
    ("ours default", "sshd hung"): 1.0,
    ("ours default", "host crash"): 2.0,
    ("ours fast", "sshd hung"): 0.5,
    ("ours fast", "host crash"): 0.4,
}


#: Faults in table order (faults not named here follow in the order they first appear).
FAULT_ORDER = ("sshd hung", "host crash", "agent killed")
#: Systems in table order: ours first, then what a sysadmin would pick instead, then the seed's set-up.
SYSTEM_ORDER = ("ours default", "ours fast", "keepalived advert_int 1", TUNED, "static (no controller)")


@dataclass
class Trial:
    """One fault injection, as measured from the clients (and, for our rows, the kernels).

    ``takeover_s`` is None when some watched source never recovered within the window, and for
    faults where nothing has to move (``agent killed``: the old owner keeps serving). Counters that
    a system cannot have are None (keepalived has no buckets, so no kernel owner samples)."""

    system: str
    fault: str
    victim: str
    takeover_s: float | None
    per_source: list[float | None] = field(default_factory=list)
    #: UDP sweeps over every client source: answers from two hosts to one datagram
    duplicates: int | None = None
    sweeps: int | None = None
    #: kernel samples (two consecutive rounds) with one bucket in two live hosts' nft sets
    two_owner_samples: int | None = None
    kernel_rounds: int | None = None
    #: keepalived: most live hosts holding the VIP at once after the fault
    vip_holders: int | None = None
    sessions_broken: int | None = None
    survivor_counts: dict[str, int] = field(default_factory=dict)
    load1: float = 0.0
    #: what went wrong in the trial's machinery, if anything (the trial is then reported, not dropped)
    error: str | None = None
    fault_at: float = 0.0
    timeline: dict[str, list[tuple[float, str]]] = field(default_factory=dict)

    @property
    def exclusivity_violations(self) -> int:
        """Duplicate answers + two-kernel-owner samples (ours); 1 if the VIP sat on 2+ live hosts."""
        total = (self.duplicates or 0) + (self.two_owner_samples or 0)
        if self.vip_holders is not None and self.vip_holders > 1:
            total += 1
        return total


@dataclass
class Row:
    system: str
    fault: str
    trials: list[Trial] = field(default_factory=list)
    #: extra facts of the run that produced the row (self-fences seen in the hook logs, load range)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.system, self.fault)

    @property
    def times(self) -> list[float]:
        return [t.takeover_s for t in self.trials if t.takeover_s is not None]

    @property
    def never(self) -> int:
        return sum(1 for t in self.trials if t.takeover_s is None)

    @property
    def moves(self) -> bool:
        """Whether the fault needs a takeover at all (not for ``agent killed``, nor without a fault)."""
        return any(t.per_source for t in self.trials) or self.fault not in ("agent killed", CALM)

    def stats(self) -> dict[str, float] | None:
        return summary(self.times) if self.times else None

    def load_range(self) -> tuple[float, float]:
        loads = [t.load1 for t in self.trials] or [0.0]
        return (min(loads), max(loads))


# ---------------------------------------------------------------------- JSON (chunked runs)


def trial_from_dict(data: dict[str, Any]) -> Trial:
    known = {f.name for f in fields(Trial)}
    kwargs = {k: v for k, v in data.items() if k in known}
    kwargs["timeline"] = {s: [(float(t), str(x)) for t, x in v] for s, v in kwargs.get("timeline", {}).items()}
    return Trial(**kwargs)


def dump(rows: Iterable[Row], path: Path, meta: dict[str, Any] | None = None) -> None:
    payload = {"meta": meta or {}, "rows": [
        {"system": r.system, "fault": r.fault, "notes": r.notes, "trials": [asdict(t) for t in r.trials]}
        for r in rows]}
    path.write_text(json.dumps(payload))


def load(paths: Sequence[Path]) -> tuple[list[Row], list[dict[str, Any]]]:
    """Rows from several chunk files, merged: trials of the same (system, fault) are appended."""
    merged: dict[tuple[str, str], Row] = {}
    metas = []
    for path in paths:
        try:
            payload = json.loads(path.read_text())
            raw_rows = payload["rows"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a bench_failover JSON file ({exc})") from None
        metas.append({"file": str(path), **payload.get("meta", {})})
        for raw in raw_rows:
            key = (raw["system"], raw["fault"])
            row = merged.setdefault(key, Row(*key))
            row.trials.extend(trial_from_dict(t) for t in raw["trials"])
            for name, value in raw.get("notes", {}).items():
                if isinstance(value, int | float) and isinstance(row.notes.get(name), int | float):
                    row.notes[name] += value
                else:
                    row.notes.setdefault(name, value)
    return list(merged.values()), metas


# ---------------------------------------------------------------------- the table


def base_system(system: str) -> str:
    """``ours fast (nice ZK -10, ...)`` -> ``ours fast``: a variant run of a system keeps its target and place."""
    return system.split(" (", 1)[0] if system.startswith("ours ") else system


def ordered(rows: Sequence[Row]) -> list[Row]:
    """Grouped by fault (FAULT_ORDER, then as they appear), systems in SYSTEM_ORDER, unknown ones last."""
    faults = list(dict.fromkeys([*(f for f in FAULT_ORDER if any(r.fault == f for r in rows)),
                                 *(r.fault for r in rows)]))
    rank = {name: i for i, name in enumerate(SYSTEM_ORDER)}
    return sorted(rows, key=lambda r: (faults.index(r.fault), rank.get(base_system(r.system), len(rank)),
                                       r.system))


def target(row: Row) -> float | None:
    """Issue 11's p99 target of the row (variants of a profile, e.g. with priorities, share it)."""
    return TARGETS.get((base_system(row.system), row.fault))


def _cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def ratio(ours: Row, rows: Sequence[Row], which: str = "p99", against: str = TUNED) -> float | None:
    """Our ``which`` takeover over keepalived's (tuned unless ``against``) for the same fault (None if
    either is missing)."""
    base = next((r for r in rows if r.system == against and r.fault == ours.fault), None)
    mine, theirs = ours.stats(), base.stats() if base else None
    if mine is None or theirs is None or theirs[which] <= 0 or ours.never:
        return None
    return mine[which] / theirs[which]


def exclusivity_cell(row: Row) -> str:
    """Duplicate answers / two-owner samples for our rows; VIP-on-2+-hosts trials for keepalived."""
    t = row.trials
    if any(x.vip_holders is not None for x in t):
        split = sum(1 for x in t if (x.vip_holders or 0) > 1)
        return f"VIP on 2+ hosts in {split}/{len(t)} trials"
    parts = []
    if any(x.duplicates is not None for x in t):
        parts.append(f"{sum(x.duplicates or 0 for x in t)} dup. answers / {sum(x.sweeps or 0 for x in t)} sweeps")
    if any(x.two_owner_samples is not None for x in t):
        parts.append(f"{sum(x.two_owner_samples or 0 for x in t)} two-owner samples / "
                     f"{sum(x.kernel_rounds or 0 for x in t)} kernel rounds")
    return "; ".join(parts) or "-"


def spread(row: Row) -> str:
    """Worst imbalance of the survivors' bucket counts over the row's trials (ours only)."""
    gaps = [max(t.survivor_counts.values()) - min(t.survivor_counts.values()) for t in row.trials
            if t.survivor_counts]
    return str(max(gaps)) if gaps else "-"


def table_line(row: Row, rows: Sequence[Row]) -> str:
    """One row of the table; ``rows`` supplies keepalived tuned's figures for the ratios."""
    s = row.stats()
    cells = [_cell(s[k]) if s else ("n/a" if not row.moves else "never") for k in ("p50", "p95", "p99", "max")]
    goal = target(row)
    target_cell = "-"
    if goal is not None:
        met = s is not None and not row.never and s["p99"] <= goal
        target_cell = f"<= {goal:g} s: {'met' if met else '**missed**'}"
    is_ours = row.system.startswith("ours")
    r99 = ratio(row, rows, "p99") if is_ours else None
    r50 = ratio(row, rows, "p50") if is_ours else None
    r99_plain = ratio(row, rows, "p99", against=PLAIN) if is_ours else None
    broken = [t.sessions_broken for t in row.trials if t.sessions_broken is not None]
    lo, hi = row.load_range()
    errors = sum(1 for t in row.trials if t.error)
    never = f"{row.never}" + (f" ({errors} errors)" if errors else "") if row.moves else "n/a"
    return (
        f"| {row.fault} | {row.system} | {len(row.trials)} | {' | '.join(cells)} | {never} | {target_cell} | "
        f"{'-' if r99 is None else f'{r99:.2f}'} | {'-' if r50 is None else f'{r50:.2f}'} | "
        f"{'-' if r99_plain is None else f'{r99_plain:.2f}'} | "
        f"{exclusivity_cell(row)} | {sum(broken) if broken else '-'} | {spread(row)} | {lo:.1f}-{hi:.1f} |"
    )


def table(rows: Sequence[Row]) -> str:
    """The side-by-side markdown table, one line per (system, fault), grouped by fault."""
    header = [
        "| fault | system | trials | takeover p50 (s) | p95 | p99 | max | never | p99 target | "
        "p99 / keepalived 0.1 | p50 / keepalived 0.1 | p99 / keepalived 1 | exclusivity | sessions broken | "
        "survivor buckets max-min | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(header + [table_line(row, rows) for row in ordered(rows) if row.fault != CALM])


def calm_table(rows: Sequence[Row]) -> str:
    """False failovers with no fault injected (bench_failover.calm_row), one line per run; "" if none."""
    calm = [r for r in ordered(rows) if r.fault == CALM]
    if not calm:
        return ""
    lines = [
        "| system | minutes | stress-ng | concurrent logins (done) | host failovers in the map (bucket moves) | "
        "self-fences | DOWN verdicts | sessions broken | two-owner samples / kernel rounds | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in calm:
        n = r.notes
        t = r.trials
        lines.append(
            f"| {r.system} | {n.get('seconds', 0) / 60:g} | {'every core' if n.get('stress') else 'no'} | "
            f"{n.get('logins', '-')} ({n.get('logins_ok', '-')}) | {n.get('failovers', '-')} "
            f"({n.get('bucket_moves', '-')}) | {n.get('self_fences', '-')} | {n.get('down_verdicts', '-')} | "
            f"{sum(x.sessions_broken or 0 for x in t)} of {6 * len(t)} | "
            f"{sum(x.two_owner_samples or 0 for x in t)} / {sum(x.kernel_rounds or 0 for x in t)} | "
            f"{n.get('load_min', 0):.1f}-{n.get('load_max', 0):.1f} |")
    return "\n".join(lines)


def violations(rows: Iterable[Row]) -> list[str]:
    """Every trial of OUR rows that broke exclusivity (keepalived's splits are its measured result)."""
    return [f"{r.system} / {r.fault} / {t.victim}: {t.duplicates} duplicate answers, "
            f"{t.two_owner_samples} two-owner samples"
            for r in rows if r.system.startswith("ours") for t in r.trials if t.exclusivity_violations]


# ---------------------------------------------------------------------- docs/failover-benchmark.md

BEGIN, END = "<!-- bench:begin (generated by deploy/lab/bench_failover.py) -->", "<!-- bench:end -->"


def findings(rows: Sequence[Row]) -> list[str]:
    """Facts the table implies, one line each: targets missed, self-fences, keepalived's splits."""
    out = []
    for row in rows:
        if row.fault == CALM:
            false = (row.notes.get("failovers") or 0) + (row.notes.get("self_fences") or 0)
            out.append(f"{row.system}, {row.fault}: {false} false failovers in {row.notes.get('seconds', 0):g} s "
                       f"({row.notes.get('failovers', 0)} in the map, {row.notes.get('self_fences', 0)} self-fences; "
                       "target 0).")
            continue
        goal, s = target(row), row.stats()
        if goal is not None and (s is None or row.never or s["p99"] > goal):
            got = "no takeover time" if s is None else f"p99 {s['p99']:.3f} s"
            never = f", {row.never} trials never recovered" if row.never else ""
            out.append(f"{row.system}, {row.fault}: target p99 <= {goal:g} s missed ({got}{never}).")
        if row.never and goal is None and row.moves and not row.times:
            window = f" {row.notes['window_s']:g} s" if "window_s" in row.notes else ""
            out.append(f"{row.system}, {row.fault}: no trial recovered within its{window} window "
                       f"({row.never} of {len(row.trials)}): drawn as 'never' in the chart, not as a time.")
        elif row.never and goal is None and row.moves:
            out.append(f"{row.system}, {row.fault}: {row.never} of {len(row.trials)} trials never recovered within "
                       "the window; its percentiles (and the ratios against it) are over the other trials.")
        if row.notes.get("self_fences"):
            out.append(f"{row.system}, {row.fault}: {row.notes['self_fences']} self-fences in the hook logs "
                       "while these trials ran (each is a false failover of one host's buckets).")
        if row.notes.get("false_down_verdicts"):
            out.append(f"{row.system}, {row.fault}: {row.notes['false_down_verdicts']} DOWN verdicts (over both "
                       "controllers) on h1, a host no trial touched: false alarms.")
        split = sum(1 for t in row.trials if (t.vip_holders or 0) > 1)
        if split:
            out.append(f"{row.system}, {row.fault}: the VIP was on two or more live hosts in {split} of "
                       f"{len(row.trials)} trials.")
    return out


def generated_block(rows: Sequence[Row], metas: Sequence[dict[str, Any]]) -> str:
    runs = []
    for m in metas:
        ls, le = m.get("load_start") or [0, 0, 0], m.get("load_end") or [0, 0, 0]
        runs.append(f"- `{' '.join(m.get('argv', []))}`: {m.get('started', '?')} to {m.get('ended', '?')}, "
                    f"load average (1/5/15 min) at start {ls[0]:.1f}/{ls[1]:.1f}/{ls[2]:.1f}, "
                    f"at end {le[0]:.1f}/{le[1]:.1f}/{le[2]:.1f}" + (f" ({m['note']})" if m.get("note") else ""))
    facts = findings(rows)
    calm = calm_table(rows)
    return "\n".join([
        BEGIN, "", table(rows), "",
        *(["False failovers with no fault injected (stress-ng on every core and concurrent SSH logins through "
           "the VIP):", "", calm, ""] if calm else []),
        "Runs merged into this table (each under the shared heavy-job lock; 2 cores):", "", *runs, "",
        *(["Read from the figures:", "", *(f"- {f}" for f in facts), ""] if facts else []),
        "![failover chart](failover-benchmark.png)", "", END,
    ])


def write_docs(rows: Sequence[Row], metas: Sequence[dict[str, Any]], path: Path) -> None:
    """Replace the generated block of ``path`` (text outside the markers is hand-written and kept)."""
    block = generated_block(rows, metas)
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = f"# Failover benchmark (measured)\n\n{block}\n"
    path.write_text(text)
