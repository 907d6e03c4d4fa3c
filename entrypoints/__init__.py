"""The entry points: the `payloop` CLI, the embedded stack, the demo, migrations and the benchmark.

The top of the import graph: these may import every package of the project, and nothing imports them.
"""
