"""Tiny random-weight models and inputs for tests and the demo (no downloads)."""
