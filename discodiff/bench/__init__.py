"""Benchmarks runnable as ``python -m discodiff.bench.<name>``."""
