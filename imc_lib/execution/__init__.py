"""Where the work runs: local and Ray executors, shards of a large scene, the time budget, progress."""
