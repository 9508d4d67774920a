"""Figures through matplotlib's object API (no pyplot state)."""
