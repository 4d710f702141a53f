"""The lab: real ZooKeeper, sshd, network namespaces and qemu, started on this machine for tests and the demo.

Not part of the installed product. Tests and deploy/lab scripts put deploy/lab on sys.path.
"""
