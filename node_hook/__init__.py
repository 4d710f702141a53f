"""Per-host agent: registers in ZooKeeper and applies the bucket ownership the controller decides."""
