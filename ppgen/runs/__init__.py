"""Run folders: checkpoints, locks, metrics, open_run / Run; whole-file writes."""
