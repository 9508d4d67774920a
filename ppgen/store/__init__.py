"""Run folders: the folder and open_run / Run (folder), checkpoints (checkpoint), the lock (lock), the small
files of records (records), whole-file writes (atomic)."""
