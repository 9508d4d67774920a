"""Training: fit and the epoch loop (loop), the request checked and the folder written (plan), where a
training process starts (start), checkpoints (checkpointer), devices and processes (distributed), RNG
capture (rng), Ctrl-C (signals), the check that a run trains something (guard), metrics and progress
(metrics_log), and how a fit stops short (errors)."""
