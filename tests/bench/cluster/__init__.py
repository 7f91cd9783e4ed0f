"""Time to a working cluster: the real ``playbooks/create.yml`` from nothing, on N test hosts, in phases.

``make bench-cluster`` or ``.venv/bin/python -m tests.bench.cluster --hosts 3,9`` (as root: it boots
test hosts). Writes ``build/bench/cluster_time.md`` and ``.json``. See docs/benchmarks.md.
"""
