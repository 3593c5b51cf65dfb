"""`lec6fast bench` and `lec6fast config`: the command runs, its table and JSON hold every
requested case, and bad options are refused.  (No timings are asserted: speed belongs to
benchmarks/.)"""

import json
import subprocess
import sys

import pytest

from lec6fast import cli
from lec6fast.bench import cases

QUICK = ["--repeat", "1", "--min-repeat", "1", "--budget", "0.01", "--batch-time", "0.0005",
         "--no-torch", "--quiet"]


def test_bench_json_holds_every_case(capsys):
    kernels = ["sgd_", "adam_", "dropout_forward", "dropout_backward(out=)", "batchnorm_fwd+bwd"]
    assert cli.main(["bench", "--json", "--dtype", "both", "--sizes", "100,1000",
                     "--kernels", ",".join(kernels), "--sections", "kernels", *QUICK]) == 0
    result = json.loads(capsys.readouterr().out)
    got = {(r["kernel"], r["dtype"], tuple(r["shape"])) for r in result["results"]}
    want = {(k, d, s) for k in kernels for d in ("float32", "float64")
            for s in cases.KERNELS[k].shapes_for([100, 1000])}
    assert got == want
    for r in result["results"]:
        assert r["lec6fast"]["median_s"] > 0 and r["reference"]["median_s"] > 0
        assert r["speedup_vs_reference"] == pytest.approx(r["reference"]["median_s"] / r["lec6fast"]["median_s"])
        assert r["probe"]["name"] == cases.KERNELS[r["kernel"]].probe
    assert result["config"]["simd_level"] and result["torch"] is None
    assert "contention" not in result
    assert all(isinstance(r["lec6fast"]["noisy"], bool) for r in result["results"])


def test_bench_contention_section(capsys):
    from lec6fast.bench import contention
    assert cli.main(["bench", "--json", "--sections", "contention", "--scenarios", "matmul,mlp",
                     *QUICK]) == 0
    rows = json.loads(capsys.readouterr().out)["contention"]
    assert [(r["scenario"], r["case"], r["n"]) for r in rows if r["scenario"] == "matmul"] == [
        ("matmul", k, n) for k in contention.MATMUL_KERNELS for n in contention.MATMUL_SIZES]
    (mlp,) = [r for r in rows if r["scenario"] == "mlp"]
    for r in rows:
        assert r["one_thread_s"] > 0 and r["threads_s"] > 0
        assert r["ratio"] == pytest.approx(r["threads_s"] / r["one_thread_s"])
    assert mlp["speedup_vs_numpy"] == pytest.approx(mlp["numpy_s"] / mlp["threads_s"])
    assert cli.main(["bench", "--sections", "contention", "--scenarios", "mlp", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "Contention" in out and "mlp training step" in out


def test_bench_table_through_the_module_entry_point(tmp_path):
    # From an empty folder: `python -m` puts the working directory first on sys.path, and in a
    # checkout that would be the source tree's (uncompiled) lec6fast/.
    out = subprocess.run([sys.executable, "-m", "lec6fast", "bench", "--sizes", "1e3",
                          "--kernels", "momentum,ema_", "--sections", "kernels", *QUICK],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert "SIMD level in use" in out and "threads" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("momentum_", "ema_"))]
    assert [r[:2] for r in rows] == [["momentum_", "1e3"], ["ema_", "1e3"]]


@pytest.mark.parametrize("argv", [["bench", "--sizes", "0"], ["bench", "--kernels", "nope"],
                                  ["bench", "--threads", "0"], ["bench", "--dtype", "float16"],
                                  ["bench", "--sections", "speed"], ["bench", "--scenarios", "gpu"]])
def test_bad_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_config(capsys):
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    assert "lec6fast" in out and "threads" in out


@pytest.mark.parametrize("argv", [["bench", "--sizes", "1e30"], ["bench", "--budget", "inf"],
                                  ["bench", "--batch-time", "nan"], ["bench", "--sizes", "2.5"]])
def test_out_of_range_options_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


def test_output_fits_100_columns_and_names_probes_as_the_table_does(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lec6fast", "bench", "--sizes", "1e3",
                           "--kernels", "dropout_backward(out=),adam_", "--sections", "kernels",
                           *[q for q in QUICK if q != "--quiet"]],
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    long = [line for line in proc.stdout.splitlines() if len(line) > 100]
    assert long == []
    assert "_scale_" not in proc.stderr and "_copy" not in proc.stderr
    assert "RMW probe" in proc.stderr and "Above 100%" in proc.stdout


def test_json_into_a_closed_pipe_exits_quietly(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "lec6fast", "bench", "--json", "--sizes", "1e3",
                             "--sections", "kernels", *QUICK], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                     # the reader (`| head`) is gone before the output
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) in (0, 1)
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_bench_torch_model_section(capsys, monkeypatch):
    """Without torch (--no-torch here, an unimportable torch in the section itself) the section
    says it was skipped; with torch its rows compare every torch variant to the lt row."""
    from lec6fast.bench import torch_model
    assert cli.main(["bench", "--sections", "torch-model", *QUICK]) == 0
    assert "torch-model: skipped" in capsys.readouterr().out
    monkeypatch.setattr(torch_model, "import_torch", lambda: None)
    assert torch_model.run(repeat=1, batch_time=1e-4) is None
    monkeypatch.undo()
    pytest.importorskip("torch")
    monkeypatch.setattr(torch_model, "WIDTH", 8)
    rows = torch_model.run(repeat=1, batch_time=1e-4)
    busy = torch_model.RULES[0]                 # Adam once more, next to a busy process
    loop = ["lt.Adam", "lt.Adam on lec6fast's own workers", "torch Adam (fused=True)",
            "torch Adam (default)"]             # and its step in a training loop
    assert [r["label"] for r in rows] == [
        f"{p}{name}{s}" for name, _, fused in torch_model.RULES + (busy,)
        for p, s in [("lt.", "")] + [("torch ", f" ({v})") for v in
                                     ["default", "foreach=True"] + ["fused=True"] * fused]] + loop
    assert all(r["rule"].endswith(", next to a busy process") for r in rows[-8:-4])
    assert all(r["rule"].endswith("in a training loop (after forward+backward)")
               for r in rows[-4:])
    for r in rows:
        assert r["seconds"] > 0 and r["n"] == 12 * (8 * 32 + 32 + 32 * 8 + 8 + 4 * 8) + 2 * 8 + 72
        if "ratio" in r:
            assert r["ratio"] == pytest.approx(r["seconds"] / r["against_s"])
