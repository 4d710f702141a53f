"""Small checks every kernel backend shares (bucket ranges, mapping wanted sets)."""

from __future__ import annotations

from collections.abc import Iterable

from controller.core.errors import BackendError


def check_bucket(bucket: int, total: int) -> int:
    """``bucket`` if it is a bucket number of this cluster, else BackendError."""
    if isinstance(bucket, bool) or not isinstance(bucket, int) or not 1 <= bucket <= total:
        raise BackendError(f"bucket {bucket!r} is outside 1..{total}: the map and the config disagree")
    return bucket


def check_buckets(buckets: Iterable[int], total: int) -> frozenset[int]:
    return frozenset(check_bucket(b, total) for b in buckets)


def fmt(buckets: Iterable[int]) -> str:
    items = sorted(buckets)
    return "{" + ",".join(str(b) for b in items) + "}" if items else "{}"
