"""Benchmarks: ``python -m zoo.bench.<name>``; results go to docs/. Their measuring helpers are in
:mod:`zoo.profiling`."""
