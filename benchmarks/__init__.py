"""Benchmarks of core-attn, run as modules (python -m benchmarks.<name>); rows go to benchmarks/results/."""
