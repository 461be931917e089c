"""Load tests and micro-benchmarks of the gateway: ``python -m bench`` (see bench/README.md)."""
