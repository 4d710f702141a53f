"""The failover benchmark's PNG chart: one failover as the clients saw it, and every row's takeover.

Why its own module: the chart is drawn from merged JSON chunks (clusterlab.benchtable), never from a
running lab. A row whose clients never recovered (the static baseline) has no takeover time; it
must not look like an instant one, so it is drawn as a hatched bar up to the observation window,
labelled "never (> window)", instead of a bar at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from clusterlab.benchtable import Row, base_system, ordered

COLORS = {"ours default": "tab:blue", "ours fast": "tab:cyan", "keepalived advert_int 1": "tab:orange",
          "keepalived advert_int 0.1": "tab:red"}


def _timeline(ax, rows: Sequence[Row]) -> None:  # type: ignore[no-untyped-def]
    example = next((t for r in rows if r.system == "ours default" for t in r.trials
                    if t.takeover_s is not None and t.timeline), None)
    if example is None:
        ax.set_axis_off()
        return
    end = max(3.0, (example.takeover_s or 0) + 1)
    for i, (_src, trans) in enumerate(sorted(example.timeline.items())):
        xs = [t - example.fault_at for t, _ in trans] + [end]
        for (t0, state), x1 in zip(trans, xs[1:], strict=False):
            color = "tab:red" if state.startswith("!") else ("tab:gray" if state == example.victim else "tab:green")
            ax.plot([max(t0 - example.fault_at, -0.5), x1], [i, i], color=color, linewidth=4)
    ax.axvline(0, color="black", linestyle="--")
    ax.set_xlim(-0.5, end)
    ax.set_title(f"one failover, ours default ({example.fault}, {example.victim}), per client source\n"
                 "gray: old host, red: no answer, green: survivor")
    ax.set_xlabel("seconds since the fault")
    ax.set_ylabel("client source")


def _rows(ax, rows: Sequence[Row]) -> None:  # type: ignore[no-untyped-def]
    shown = [r for r in ordered(rows) if r.moves]
    labels = []
    top = max((max(r.times) for r in shown if r.times), default=1.0)
    for y, row in enumerate(shown):
        labels.append(f"{row.fault}\n{row.system}")
        color = COLORS.get(base_system(row.system), "tab:gray")
        stats = row.stats()
        if stats is None:
            window = float(row.notes.get("window_s", top * 1.2))
            ax.barh(y, window, color="white", edgecolor="black", hatch="//")
            ax.text(window, y, f"  never (> {window:g} s window)", va="center")
            continue
        ax.barh(y, stats["p50"], color=color, alpha=0.5)
        ax.plot(row.times, [y] * len(row.times), "|", color="black", markersize=10)
        ax.plot([stats["p99"]], [y], "D", color=color, markeredgecolor="black")
        note = f"  p99 {stats['p99']:.2f} s"
        if row.never:
            note += f", {row.never} never"
        ax.text(max(row.times), y, note, va="center", fontsize=8)
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("takeover (s): fault until every watched source opens a new SSH session")
    ax.set_title("bar: p50, ticks: trials, diamond: p99; hatched: never recovered")


def chart(rows: Sequence[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    moving = [r for r in rows if r.moves]
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, max(5.0, 0.55 * len(moving) + 1.5)),
                                      gridspec_kw={"width_ratios": [1, 1.4]})
    _timeline(left, rows)
    _rows(right, rows)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
