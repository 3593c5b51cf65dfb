"""lec6fast.torch's layers against torch.nn's (lec6fast/bench/torch_layers.py): one forward +
backward, training, float32, of Dropout(p=0.5) at (256, 4096) and (64, 64, 32, 32),
BatchNorm1d at (256, 4096) and (64, 128, 256), BatchNorm2d at (64, 64, 32, 32); extra_info
holds the bytes each dropout keeps for its backward.  Skipped without torch.

`lec6fast bench --sections torch-layers` times the same cases with their batches interleaved,
which gives steadier ratios here.
"""

import pytest

pytest.importorskip("torch")

from lec6fast.bench import torch_layers  # noqa: E402

CASES = [pytest.param(kind, shape, impl, id=f"{kind}-{'x'.join(map(str, shape))}-{impl}")
         for _, kind, shape in torch_layers.CASES for impl in ("lec6fast.torch", "torch.nn")]


@pytest.mark.parametrize("kind, shape, impl", CASES)
def test_torch_layer_forward_backward(benchmark, time_fn, kind, shape, impl):
    benchmark.group = f"torch layers: {kind} {'x'.join(map(str, shape))} float32, forward + backward"
    case = torch_layers.calls(kind, shape)
    if kind == "Dropout":
        benchmark.extra_info["saved mask bytes"] = case[
            "mask_bytes" if impl == "lec6fast.torch" else "against_mask_bytes"]
    time_fn(case[impl])
