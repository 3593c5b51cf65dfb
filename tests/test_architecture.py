"""What may import what (ARCHITECTURE.md), checked on the installed package's sources.

Every import statement of every module is read with `ast`, at any depth (an import inside a
function counts too, except where a rule says "at module level").
"""

import ast
from pathlib import Path

import pytest

import lec6fast

PACKAGE = Path(lec6fast.__file__).resolve().parent
# every module of the package, subpackages too ("optim/_optimizer", "bench/model")
MODULES = sorted(str(p.relative_to(PACKAGE).with_suffix("")) for p in PACKAGE.rglob("*.py"))
BENCH_AND_CLI = {"cli", "__main__", "bench"}
TORCH_ADAPTER = "torch"         # lec6fast/torch/: the one library package that imports torch


def is_bench_or_cli(module):
    return module.split("/")[0] in BENCH_AND_CLI


def imports(module, top_level_only=False):
    """{(imported module, its lec6fast submodule or None)} of `module`."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {(a.name, None) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:                                  # from . import x / from .x import y
                if node.module:
                    found.add(("lec6fast", node.module.split(".")[0]))
                else:
                    found |= {("lec6fast", a.name) for a in node.names}
            elif node.module == "lec6fast":
                found |= {("lec6fast", a.name) for a in node.names}
            elif node.module.startswith("lec6fast."):
                found.add(("lec6fast", node.module.split(".")[1]))
            else:
                found.add((node.module, None))
    return found


def lec6fast_modules(module, **kw):
    return {sub for name, sub in imports(module, **kw) if name == "lec6fast" and sub}


def test_the_walk_sees_the_modules():
    assert {"__init__", "reference", "_dispatch", "bench/run", "cli", "optim/_optimizer",
            "bench/model", "schedules"} <= set(MODULES)
    assert "_dispatch" in lec6fast_modules("__init__")
    assert "bench" in lec6fast_modules("cli")


@pytest.mark.parametrize("module", [m for m in MODULES if not is_bench_or_cli(m)])
def test_no_library_module_imports_the_benchmarks_or_the_cli(module):
    assert not lec6fast_modules(module) & BENCH_AND_CLI, module


def is_torch_adapter(module):
    return module.split("/")[0] == TORCH_ADAPTER


@pytest.mark.parametrize("module", [m for m in MODULES if not is_torch_adapter(m)])
def test_torch_is_imported_only_by_the_adapter_and_the_benchmarks(module):
    """The benchmarks import torch only inside functions (it is optional there)."""
    top = {name.split(".")[0] for name, _ in imports(module, top_level_only=True)}
    assert "torch" not in top, module
    anywhere = {name.split(".")[0] for name, _ in imports(module)}
    if not is_bench_or_cli(module):
        assert "torch" not in anywhere, module


@pytest.mark.parametrize("module", [m for m in MODULES
                                    if not is_torch_adapter(m) and not is_bench_or_cli(m)])
def test_no_library_module_imports_the_torch_adapter(module):
    assert TORCH_ADAPTER not in lec6fast_modules(module), module


def test_importing_lec6fast_does_not_import_torch(run_python):
    code = ("import sys, lec6fast, lec6fast.optim, lec6fast.cs231n, lec6fast.schedules, "
            "lec6fast.reference; print('torch' in sys.modules)")
    assert run_python(code).stdout.strip() == "False"


def test_the_adapter_without_torch_says_how_to_install_it(run_python):
    """torch made unimportable (a None entry in sys.modules) for the child process."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import lec6fast.torch\n"
            "except ImportError as e:\n    print(e)\n")
    out = run_python(code).stdout
    assert "needs PyTorch" in out and "pip install torch" in out, out


def test_the_reference_needs_numpy_only():
    assert {name.split(".")[0] for name, _ in imports("reference")} == {"numpy"}


def test_the_benchmarks_do_not_import_the_cli():
    for module in [m for m in MODULES if m.startswith("bench/")]:
        assert "cli" not in lec6fast_modules(module), module


def test_the_optimizers_reach_the_kernels_through_the_dispatch_only():
    """lec6fast.optim runs the chosen SIMD level's fused step, never a fixed build."""
    for module in [m for m in MODULES if m.startswith("optim/")]:
        assert not {"_updates", "_dropout", "_batchnorm"} & lec6fast_modules(module), module
