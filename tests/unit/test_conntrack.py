"""The conntrack listing parser and per-bucket session count (controller/core/conntrack.py)."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.conntrack import ConntrackError, count_sessions, parse, parse_line
from controller.core.hashing import bucket_for

from .planner_sim import make_spec

SPEC = make_spec(2, 4)  # nftables, VIP 198.18.0.100, protocol tcp, any port

PROC = (
    "ipv4     2 tcp      6 431999 ESTABLISHED src=198.18.1.5 dst=198.18.0.100 sport=40000 dport=22 "
    "src=198.18.0.100 dst=198.18.1.5 sport=22 dport=40000 [ASSURED] mark=0 zone=0 use=2"
)
TOOL = (
    "tcp      6 119 TIME_WAIT src=198.18.1.6 dst=198.18.0.100 sport=40001 dport=22 src=198.18.0.100 "
    "dst=198.18.1.6 sport=22 dport=40001 [ASSURED] mark=0 use=1"
)
UDP = ("ipv4     2 udp      17 29 src=198.18.1.7 dst=198.18.0.100 sport=5000 dport=7000 [UNREPLIED] "
       "src=198.18.0.100 dst=198.18.1.7 sport=7000 dport=5000 mark=0 use=1")
ICMP = ("ipv4     2 icmp     1 29 src=198.18.1.8 dst=198.18.0.100 type=8 code=0 id=7 src=198.18.0.100 "
        "dst=198.18.1.8 type=0 code=0 id=7 mark=0 use=1")


def test_both_listing_formats_parse_to_the_original_direction() -> None:
    entry = parse_line(PROC)
    assert (entry.protocol, entry.state, str(entry.src), str(entry.dst), entry.sport, entry.dport) == (
        "tcp", "ESTABLISHED", "198.18.1.5", "198.18.0.100", 40000, 22)
    assert parse_line(TOOL).state == "TIME_WAIT"
    assert parse_line(UDP).state is None and parse_line(ICMP).sport is None
    v6 = parse_line("ipv6 10 tcp 6 300 ESTABLISHED src=2001:0db8:0000:0000:0000:0000:0000:0001 "
                    "dst=2001:db8::100 sport=1 dport=22 src=2001:db8::100 dst=2001:db8::1 sport=22 dport=1 use=1")
    assert v6.src == ipaddress.ip_address("2001:db8::1")


def test_counts_live_tcp_sessions_per_bucket_with_the_kernel_hash() -> None:
    bucket = bucket_for("nftables", ipaddress.ip_address("198.18.1.5"), 4, SPEC.hash)
    text = "\n".join([PROC, TOOL, UDP, ICMP, "", PROC.replace("dst=198.18.0.100", "dst=198.18.0.99", 1)])
    counts = count_sessions(parse(text), SPEC, [bucket, 1 + bucket % 4])
    # TIME_WAIT is over, UDP flows are not drained, another destination is not the VIP
    assert counts == {bucket: 1, 1 + bucket % 4: 0}
    assert count_sessions(parse(PROC), SPEC, []) == {}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("garbage", "too short"),
        ("ipv4 2", "too short"),
        ("tcp 6 12 src=1.2.3.4 dst=1.2.3.5", "without a state word"),
        ("tcp 6 x ESTABLISHED src=1.2.3.4 dst=1.2.3.5", "timeout"),
        ("tcp 6 12 ESTABLISHED src=1.2.3.4", "no src=/dst="),
        ("tcp 6 12 ESTABLISHED src=1.2.3.4 dst=nope", "not an IP address"),
        ("tcp 6 12 ESTABLISHED src=1.2.3.4 dst=1.2.3.5 sport=99999", "sport"),
        ("tcp 6 12 ESTABLISHED src=1.2.3.4 dst=1.2.3.5 $(rm -rf)", "unexpected token"),
        ("tcp 6 12 ESTABLISHED src=1.2.3.4 dst=1.2.3.5 " + "x" * 3000, "characters"),
        ("t-p 6 12 ESTABLISHED src=1.2.3.4 dst=1.2.3.5", "not a protocol name"),
    ],
)
def test_malformed_lines_are_one_clear_error(line: str, problem: str) -> None:
    with pytest.raises(ConntrackError, match=problem) as info:
        parse("\n" + line)
    assert "line 2" in str(info.value) and "\n" not in str(info.value)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_hostile_text_parses_or_raises_conntrack_error_only(text: str) -> None:
    with contextlib.suppress(ConntrackError):
        parse(text)


@settings(max_examples=300, deadline=None)
@given(
    st.ip_addresses(v=4), st.integers(0, 65535), st.sampled_from([22, 80]),
    st.sampled_from(["ESTABLISHED", "SYN_RECV", "FIN_WAIT", "CLOSE_WAIT", "TIME_WAIT", "CLOSE"]),
    st.booleans(),
)
def test_generated_entries_round_trip_and_count(
    src: ipaddress.IPv4Address, sport: int, dport: int, state: str, proc: bool
) -> None:
    line = (f"tcp 6 100 {state} src={src} dst=198.18.0.100 sport={sport} dport={dport} src=198.18.0.100 "
            f"dst={src} sport={dport} dport={sport} [ASSURED] mark=0 use=1")
    entry = parse_line(("ipv4     2 " if proc else "") + line)
    assert (entry.src, entry.sport, entry.dport, entry.state) == (src, sport, dport, state)
    bucket = bucket_for("nftables", src, 4, SPEC.hash)
    live = state not in ("TIME_WAIT", "CLOSE")
    assert count_sessions([entry], SPEC, [bucket])[bucket] == int(live)
