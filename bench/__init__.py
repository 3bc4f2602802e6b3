"""Benchmarks for lockoutd (issue 7): see ``bench/README.md``. Never imported by the daemon."""
