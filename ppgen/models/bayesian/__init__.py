"""Families with global parameters under priors (GMM, HMM), their base class and closed-form M-steps."""
