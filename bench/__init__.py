"""Benchmarks that print JSON; the figures and the method are in docs/BENCHMARKS.md."""
