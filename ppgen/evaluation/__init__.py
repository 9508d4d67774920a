"""What a fitted model scores: held-out likelihood, sample quality, classification, tables across runs."""
