"""The compiled modules: one kernel family per src/<family>.pyx, each built once per SIMD level
(lec6fast.<family>, lec6fast.<family>_avx2, ...), and the helpers, built once.

The one list of them: setup.py reads this file (and refuses a src/*.pyx that is not listed),
lec6fast._dispatch imports it.
"""

FAMILIES = ("_updates", "_dropout", "_batchnorm")
# built once, at the baseline level: the runtime (CPU detection, the pool) and L-BFGS's serial
# vector passes
HELPERS = ("_runtime", "_lbfgs")
