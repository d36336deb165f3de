"""Tiny, real models that run offline: the demo, the tests and the benchmarks build on them."""
