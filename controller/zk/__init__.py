"""The ZooKeeper boundary: kazoo is imported only below this package (and by node_hook's agent)."""
