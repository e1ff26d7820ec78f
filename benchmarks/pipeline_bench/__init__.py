"""``benchmarks/pipeline.py`` in rooms: the harness, a module a section, the report."""
