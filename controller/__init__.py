"""clusterip-failover controller: decides which host owns which hash bucket.

Importing this package imports nothing heavy: the node hook shares the pure
``controller.core`` modules and must never pull in paramiko or kazoo through here.
"""
