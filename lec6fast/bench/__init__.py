"""lec6fast's benchmark code (imported by `lec6fast bench` and benchmarks/, never by the library).

model: the "model step" section, lec6fast.optim over whole models.  (The kernels and contention
sections still live in lec6fast/_bench.py and lec6fast/_contention.py.)
"""
