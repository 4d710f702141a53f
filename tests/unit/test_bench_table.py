"""The failover benchmark's table, ratios, JSON merge and docs block (clusterlab.benchtable), on hand-made trials.

Why: the real figures come from chunked lab runs merged afterwards; a wrong ratio, a lost chunk or a
never-recovered row shown as a time would silently misreport them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clusterlab import benchtable
from clusterlab.benchtable import Row, Trial


def ours(fault: str, times: list[float | None], system: str = "ours default", **kw: object) -> Row:
    trials = [Trial(system, fault, "h2", t, [t], duplicates=0, sweeps=10, two_owner_samples=0, kernel_rounds=50,
                    sessions_broken=0, load1=2.0 + i, **kw) for i, t in enumerate(times)]  # type: ignore[arg-type]
    return Row(system, fault, trials)


def keepalived(fault: str, times: list[float | None], holders: int = 1) -> Row:
    system = benchtable.TUNED
    return Row(system, fault, [Trial(system, fault, "h1", t, [t], vip_holders=holders, load1=5.0) for t in times])


def line(text: str, system: str, fault: str) -> list[str]:
    found = [ln for ln in text.splitlines() if f"| {fault} | {system} |" in ln]
    assert len(found) == 1, text
    return [c.strip() for c in found[0].strip("|").split("|")]


def test_ratio_is_ours_over_keepalived_tuned_for_the_same_fault() -> None:
    rows = [ours("host crash", [1.0, 2.0, 3.0]), keepalived("host crash", [0.5, 0.5, 0.5]),
            keepalived("sshd hung", [10.0])]
    assert benchtable.ratio(rows[0], rows, "p50") == pytest.approx(4.0)
    assert benchtable.ratio(rows[0], rows, "p99") == pytest.approx(rows[0].stats()["p99"] / 0.5)  # type: ignore[index]
    cells = line(benchtable.table(rows), "ours default", "host crash")
    assert cells[9] == f"{rows[0].stats()['p99'] / 0.5:.2f}" and cells[10] == "4.00"  # type: ignore[index]


def test_a_row_with_never_recovered_trials_has_no_ratio_and_misses_its_target() -> None:
    rows = [ours("sshd hung", [0.5, None]), keepalived("sshd hung", [0.5])]
    assert benchtable.ratio(rows[0], rows) is None
    cells = line(benchtable.table(rows), "ours default", "sshd hung")
    assert cells[7] == "1" and "missed" in cells[8]


def test_static_row_without_any_recovery_prints_never_not_zero() -> None:
    static = ours("host crash", [None, None], system="static (no controller)")
    cells = line(benchtable.table([static]), "static (no controller)", "host crash")
    assert cells[3:7] == ["never"] * 4 and cells[7] == "2"


def test_targets_per_profile() -> None:
    rows = [ours("host crash", [0.3, 0.35], system="ours fast"), ours("host crash", [2.5], system="ours default")]
    text = benchtable.table(rows)
    assert "met" in line(text, "ours fast", "host crash")[8]
    assert "**missed**" in line(text, "ours default", "host crash")[8]


def test_exclusivity_cells_and_violations() -> None:
    bad = ours("host crash", [1.0])
    bad.trials[0].two_owner_samples = 3
    split = keepalived("agent killed", [None, None], holders=2)
    assert "3 two-owner samples / 50 kernel rounds" in benchtable.exclusivity_cell(bad)
    assert benchtable.exclusivity_cell(split) == "VIP on 2+ hosts in 2/2 trials"
    assert len(benchtable.violations([bad, split])) == 1  # keepalived's split is its result, not our failure


def test_chunks_merge_by_row_and_keep_every_trial(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    row = ours("sshd hung", [0.7, 0.8])
    row.trials[0].timeline = {"198.18.1.1": [(1.0, "h2"), (2.0, "h3")]}
    benchtable.dump([row], a, {"argv": ["--trials", "2"], "load_start": [1, 2, 3]})
    benchtable.dump([ours("sshd hung", [0.9]), keepalived("sshd hung", [0.6])], b, {"argv": ["x"]})
    rows, metas = benchtable.load([a, b])
    assert [(r.system, len(r.trials)) for r in rows] == [("ours default", 3), (benchtable.TUNED, 1)]
    assert rows[0].trials[0].timeline == {"198.18.1.1": [(1.0, "h2"), (2.0, "h3")]}
    assert len(metas) == 2 and metas[0]["file"] == str(a)


def test_a_file_that_is_not_a_chunk_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a bench_failover JSON file"):
        benchtable.load([bad])


def test_docs_block_is_replaced_and_hand_written_text_kept(tmp_path: Path) -> None:
    doc = tmp_path / "bench.md"
    doc.write_text(f"# title\n\nintro\n\n{benchtable.BEGIN}\nold table\n{benchtable.END}\n\n## Notes\nmine\n")
    benchtable.write_docs([ours("sshd hung", [0.7])], [{"argv": ["--trials", "1"], "load_end": [4, 5, 6]}], doc)
    text = doc.read_text()
    assert "old table" not in text and "intro" in text and "## Notes\nmine" in text
    assert "| sshd hung | ours default | 1 |" in text and "at end 4.0/5.0/6.0" in text


def test_rows_are_grouped_by_fault_with_ours_first() -> None:
    rows = [keepalived("sshd hung", [0.5]), ours("host crash", [1.0]), ours("sshd hung", [0.7], system="ours fast"),
            ours("sshd hung", [0.7])]
    got = [(r.fault, r.system) for r in benchtable.ordered(rows)]
    assert got == [("sshd hung", "ours default"), ("sshd hung", "ours fast"), ("sshd hung", benchtable.TUNED),
                   ("host crash", "ours default")]


def test_known_faults_come_first_in_a_fixed_order_new_ones_after() -> None:
    rows = [ours("failback with drain", [1.0]), ours("agent killed", [None]), ours("host crash", [1.0])]
    assert [r.fault for r in benchtable.ordered(rows)] == ["host crash", "agent killed", "failback with drain"]


def test_a_profile_run_with_priorities_keeps_its_target_and_place() -> None:
    variant = "ours fast (nice ZK -10, hooks -10, sshd -5)"
    rows = [ours("host crash", [0.3], system=variant), ours("host crash", [1.0], system="ours fast"),
            ours("host crash", [1.0])]
    assert benchtable.target(rows[0]) == 0.4
    assert "met" in line(benchtable.table(rows), variant, "host crash")[8]
    assert [r.system for r in benchtable.ordered(rows)] == ["ours default", "ours fast", variant]


def test_second_ratio_column_is_against_keepalived_advert_int_1() -> None:
    plain = Row(benchtable.PLAIN, "host crash",
                [Trial(benchtable.PLAIN, "host crash", "h1", 4.0, [4.0], vip_holders=1, load1=5.0)])
    rows = [ours("host crash", [1.0]), keepalived("host crash", [0.5]), plain]
    cells = line(benchtable.table(rows), "ours default", "host crash")
    assert cells[9] == "2.00" and cells[11] == "0.25"
    assert line(benchtable.table(rows), benchtable.PLAIN, "host crash")[11] == "-"


def test_calm_rows_count_false_failovers_in_their_own_table() -> None:
    calm = ours(benchtable.CALM, [None], system="ours fast")
    calm.trials[0].per_source = []
    calm.notes.update({"seconds": 300, "stress": True, "logins": 100, "logins_ok": 900, "failovers": 2,
                       "bucket_moves": 8, "self_fences": 3, "down_verdicts": 1, "load_min": 9.0, "load_max": 30.0})
    rows = [calm, ours("sshd hung", [0.7])]
    assert benchtable.CALM not in benchtable.table(rows) and not calm.moves
    text = benchtable.calm_table(rows)
    assert "| ours fast | 5 | every core | 100 (900) | 2 (8) | 3 | 1 | 0 of 6 | 0 / 50 | 9.0-30.0 |" in text
    assert any("5 false failovers in 300 s" in f for f in benchtable.findings(rows))
    assert benchtable.calm_table([rows[1]]) == ""
