"""Kernel backends: one module per way of telling the kernel which buckets this host owns."""
