"""Performance benchmark of the pipeline (`make bench-perf`, `python -m bench.perf [--quick]`).

Every figure is measured by the project's own code, in subprocesses pinned to the configured CPUs
with an explicit torch thread count; comparisons (recording on/off, pipeline loop vs bare loop,
Dagster vs a plain script, polars vs pandas, teacher vs student) are interleaved A/B repetitions
whose medians and pair-by-pair ratios are reported. Peak memory is each subprocess's own ru_maxrss.
Results: bench/results/performance.{md,json} (QUICK: bench/results/quick/).
"""
