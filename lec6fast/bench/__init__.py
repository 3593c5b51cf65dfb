"""lec6fast's benchmark code (imported by `lec6fast bench` and benchmarks/, never by the library).

timing: bound calls, the timing engine (batches, medians, interleaving) and thread counts.
cases: the benchmarked operations (the update rules' built from lec6fast._rules.RULES) and the
bandwidth probes.  torch_twins: the closest PyTorch CPU call to each.  The three sections of
`lec6fast bench`, each a run(threads=...): run (the kernels against their references, torch and
the probes), contention (where users run: next to NumPy's BLAS, a busy process, torch's pool)
and model (lec6fast.optim over whole models).  report: the one table printer and each
section's lines, for the command and the pytest-benchmark suite.
"""
