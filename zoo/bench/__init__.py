"""Benchmarks: ``python -m zoo.bench.<name>``; results go to docs/."""
