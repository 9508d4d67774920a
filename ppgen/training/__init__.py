"""The training loop: run folders created and resumed, devices, RNG capture, signals, the epoch loop."""
