"""Run plumbing, the ground floor every command stands on: the run directory (which records the
command's kind), atomic checkpoints, progress, trackers, and the one training-loop skeleton."""
