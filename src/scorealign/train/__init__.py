"""Training infrastructure: run directories, atomic checkpoints, seeded randomness."""
