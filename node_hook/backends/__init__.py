"""Kernel backends: one module per way of telling the kernel which buckets this host owns.

Modules are imported lazily so that a host only loads the library its backend needs (iptc for
clusterip/xt_cluster, libnftables for nftables).
"""

from __future__ import annotations

import importlib

from controller.core.errors import BackendError
from controller.core.model import ClusterSpec
from node_hook.backends.base import BucketBackend

#: backend name -> (module, class)
BACKEND_CLASSES: dict[str, tuple[str, str]] = {
    "clusterip": ("node_hook.backends.clusterip", "ClusterIPBackend"),
    "xt_cluster": ("node_hook.backends.xt_cluster", "XtClusterBackend"),
    "nftables": ("node_hook.backends.nftables", "NftablesBackend"),
    "memory": ("node_hook.backends.memory", "MemoryBackend"),
}


def create_backend(spec: ClusterSpec, host_id: str, name: str | None = None,
                   deadman_s: float | None = None) -> BucketBackend:
    """The backend for ``spec`` on host ``host_id`` (``name`` overrides the configured one, e.g. memory).

    ``deadman_s``: the kernel stops accepting this long after the hook's last refresh
    (controller/core/deadman.py); None installs no dead-man switch. The memory backend has none.
    """
    chosen = name or spec.backend
    if chosen not in BACKEND_CLASSES:
        raise BackendError(f"unknown backend {chosen!r}: use one of {', '.join(BACKEND_CLASSES)}")
    module_name, class_name = BACKEND_CLASSES[chosen]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend {chosen} is not available here: {exc}") from None
    cls = getattr(module, class_name)
    if chosen == "memory":
        backend: BucketBackend = cls(spec.buckets)
    else:
        backend = cls(spec, host_id, deadman_s=deadman_s)
    return backend
