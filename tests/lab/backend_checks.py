"""Expectations for the backend lab tests: predicted host per source, and comparing probe answers.

Shared by the namespace tests (tests/lab/test_backend_kernel.py) and the guest side of the qemu
CLUSTERIP test, so both judge the kernel by the same rule: every source answered exactly once, by
the host that owns the bucket controller.core.hashing.bucket_for predicts for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from controller.core.hashing import bucket_for
from controller.core.model import HashSettings


def buckets_of_sources(spec: Mapping[str, Any], sources: Iterable[str], dport: int = 0) -> dict[str, int]:
    """source -> bucket as the configured backend's kernel computes it (sport 0 is unused by sourceip)."""
    hs = HashSettings(mode=spec["mode"], hash_init=spec["hash_init"], seed=spec["seed"])
    return {s: bucket_for(spec["backend"], ipaddress.ip_address(s), spec["buckets"], hs, 0, dport) for s in sources}


def expected_hosts(bucket_of: Mapping[str, int], owners: Mapping[int, str | None]) -> dict[str, str | None]:
    """source -> host that must answer (None: its bucket is owned by nobody, so no answer)."""
    return {s: owners.get(b) for s, b in bucket_of.items()}


def compare_udp(answers: Mapping[str, list[str]], expected: Mapping[str, str | None]) -> tuple[int, list[str]]:
    """(sources answered exactly as expected, one line per deviation)."""
    matched, problems = 0, []
    for src, want in expected.items():
        got = answers.get(src, [])
        if (want is None and got == []) or got == [want]:
            matched += 1
        else:
            problems.append(f"{src}: expected {want or 'no answer'}, got {got}")
    return matched, problems


def compare_tcp(answers: Mapping[str, str | None], expected: Mapping[str, str | None]) -> tuple[int, list[str]]:
    matched, problems = 0, []
    for src, want in expected.items():
        if answers.get(src) == want:
            matched += 1
        else:
            problems.append(f"{src}: expected {want or 'no answer'}, got {answers.get(src)}")
    return matched, problems
