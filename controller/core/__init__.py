"""Pure core shared by the controller, the node hook and clusterip-ctl.

No module here performs I/O or imports kazoo, paramiko or iptc; mypy checks them strictly.
"""
