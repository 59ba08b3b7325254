"""Plots: learned retention against theory, capacity, per-layer ReLU distributions."""
