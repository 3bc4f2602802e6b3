"""Benchmarks for lockoutd: see ``bench/README.md``. Never imported by the daemon."""
