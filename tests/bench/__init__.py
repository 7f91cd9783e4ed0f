"""Benchmarks: bacalhau.aws_spot against the stock amazon.aws way, on the emulator.

``make bench`` or ``.venv/bin/python -m tests.bench [--regions 5] [--instances 20]
[--latency-ms 100] [--large]``; writes ``build/bench/report.md`` and ``report.json``.
See docs/benchmarks.md.
"""
