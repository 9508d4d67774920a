"""ppgen diagnose: InferenceData, summaries and diagnostic figures of a run."""
