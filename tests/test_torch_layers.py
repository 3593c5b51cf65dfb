"""lec6fast.torch's layers against torch.nn's: Dropout against nn.Dropout (the law of the mask,
scaling, eval, gradients, reproducibility), BatchNorm1d/2d against nn.BatchNorm1d/2d (outputs,
gradients, running statistics over several steps, state dicts both ways, eval mode, gradcheck
in float64).

Tolerances: lec6fast computes batch norm in float64 and rounds once, so its float32 results
are held to torch's float64 computation on the same (float32-valued) inputs, within a few
float32 ulps of the largest magnitude; float64 against float64 within 1e-12 of it.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lec6fast                                      # noqa: E402
import lec6fast.torch as lt                          # noqa: E402
from torch import nn                                 # noqa: E402

DTYPES = [torch.float32, torch.float64]
ULPS = {torch.float32: 8 * 2.0 ** -23, torch.float64: 1e-12}


def close(actual, truth, dtype):
    """actual (of dtype) within ULPS[dtype] * max(1, max|truth|) of truth (float64)."""
    actual, truth = actual.detach().double(), truth.detach().double()
    assert actual.shape == truth.shape
    bound = ULPS[dtype] * max(1.0, truth.abs().max().item() if truth.numel() else 1.0)
    err = (actual - truth).abs().max().item() if truth.numel() else 0.0
    assert err <= bound, (err, bound)


def randn(shape, dtype, seed=0, loc=0.0):
    g = torch.Generator().manual_seed(seed)
    return (loc + torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)


# ================================================================ Dropout

SHAPES = [(), (1,), (7,), (255,), (257,), (3, 5), (4, 3, 9, 11), (1000, 1001)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8, 0.999])
def test_dropout_scales_kept_units_and_zeroes_the_rest(dtype, shape, p):
    x = randn(shape, dtype, seed=1).requires_grad_()
    torch.manual_seed(3)
    out = lt.Dropout(p)(x)
    assert out.dtype == dtype and out.shape == x.shape and out.is_contiguous()
    keep = torch.from_numpy(out.grad_fn.mask.to_array())
    scale = 1.0 / (1.0 - p)
    # kept: x * 1/(1 - p) computed in double and rounded once; dropped: exactly 0
    want = torch.where(keep, (x.detach().double() * scale).to(dtype), torch.zeros((), dtype=dtype))
    assert torch.equal(out.detach(), want)
    dout = randn(shape, dtype, seed=2)
    out.backward(dout)
    assert torch.equal(x.grad, torch.where(keep, (dout.double() * scale).to(dtype),
                                           torch.zeros((), dtype=dtype)))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_kept_values_equal_nn_dropouts(p):
    # nn.Dropout's float32 mask is 1/(1 - p) rounded to float32, then multiplied: within 1 ulp
    x = randn((100_000,), torch.float32, seed=4)
    ours = lt.Dropout(p)(x)
    theirs = nn.Dropout(p)(x)
    both = (ours != 0) & (theirs != 0)
    assert both.sum() > 0
    torch.testing.assert_close(ours[both], theirs[both], rtol=2 ** -23, atol=0)


@pytest.mark.parametrize("p", [0.01, 0.1, 0.5, 0.9, 0.99])
def test_dropout_keeps_a_fraction_of_one_minus_p_as_nn_dropout(p):
    n = 1_000_000
    x = torch.ones(n)
    torch.manual_seed(int(p * 1000))
    sd = math.sqrt(n * p * (1 - p))
    for layer in (lt.Dropout(p), nn.Dropout(p)):
        out = layer(x)
        kept = (out != 0).sum().item()
        assert abs(kept - n * (1 - p)) <= 5 * sd, (type(layer), kept, n * (1 - p), sd)
        # the mean is preserved: sd of the sample mean is sqrt(p / ((1 - p) n))
        assert abs(out.double().mean().item() - 1.0) <= 5 * math.sqrt(p / ((1 - p) * n))


def test_dropout_neighbours_and_consecutive_masks_are_independent():
    x = torch.ones(400_000)
    torch.manual_seed(5)
    layer = lt.Dropout(0.5)
    a, b = (layer(x) != 0).numpy(), (layer(x) != 0).numpy()

    def chi2(u, v):
        t = np.array([[np.sum(~u & ~v), np.sum(~u & v)], [np.sum(u & ~v), np.sum(u & v)]], float)
        e = t.sum(1, keepdims=True) * t.sum(0, keepdims=True) / t.sum()
        return ((t - e) ** 2 / e).sum()
    assert chi2(a, b) < 23.93                # P(chi2_1 > 23.93) = 1e-6; fixed seed
    assert chi2(a[:-1], a[1:]) < 23.93


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_eval_mode_is_the_identity_as_nn_dropout(dtype):
    x = randn((5, 6), dtype)
    for layer in (lt.Dropout(0.5), nn.Dropout(0.5)):
        layer.eval()
        assert layer(x) is x
    assert lt.functional.dropout(x, 0.5, training=False) is x


def test_dropout_edge_probabilities_match_nn_dropout():
    x = torch.tensor([float("nan"), float("inf"), 1.0, -2.0], requires_grad=True)
    # p = 0: the input itself; p = 1: input * 0 (NaN stays NaN), gradient 0
    assert lt.Dropout(0.0)(x) is nn.Dropout(0.0)(x) is x
    ours, theirs = lt.Dropout(1.0)(x), nn.Dropout(1.0)(x)
    torch.testing.assert_close(ours, theirs, equal_nan=True)
    g, = torch.autograd.grad(ours.sum(), x)
    h, = torch.autograd.grad(theirs.sum(), x)
    assert torch.equal(g, h) and torch.equal(g, torch.zeros(4))


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4, 5)], ids=str)
def test_dropout_of_an_empty_tensor_is_the_tensor(shape):
    x = torch.empty(shape)
    state = torch.get_rng_state()
    assert lt.Dropout(0.5)(x) is x
    assert torch.equal(torch.get_rng_state(), state)          # nothing drawn


def test_dropout_non_finite_values_propagate_as_in_nn_dropout():
    # x * 0 for a dropped unit, as nn.Dropout's x * mask: NaN stays NaN, +-inf becomes NaN
    x = torch.tensor([float("nan"), float("inf"), -float("inf")] * 100, requires_grad=True)
    torch.manual_seed(6)
    out = lt.Dropout(0.5)(x)
    keep = torch.from_numpy(out.grad_fn.mask.to_array())
    assert 0 < keep.sum() < 300
    want = torch.where(keep, x.detach() * 2.0, x.detach() * 0.0)
    torch.testing.assert_close(out, want, equal_nan=True, rtol=0, atol=0)
    theirs = nn.Dropout(0.5)(x).detach()
    kept_theirs = theirs[1::3] == float("inf")
    assert torch.isnan(theirs[0::3]).all() and torch.isnan(theirs[1::3][~kept_theirs]).all()


def test_dropout_masks_repeat_after_manual_seed_and_differ_between_calls():
    x = torch.ones(10_000)
    layer = lt.Dropout(0.5)
    torch.manual_seed(7)
    a, b = layer(x), layer(x)
    torch.manual_seed(7)
    c, d = layer(x), layer(x)
    assert torch.equal(a, c) and torch.equal(b, d) and not torch.equal(a, b)
    torch.manual_seed(8)
    assert not torch.equal(layer(x), a)


def test_dropout_generator_argument_decides_the_mask_alone():
    x = torch.ones(10_000)
    layer = lt.Dropout(0.3, generator=torch.Generator().manual_seed(9))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = layer(x)
    assert torch.equal(torch.get_rng_state(), state)          # the default generator untouched
    torch.manual_seed(1)
    b = lt.functional.dropout(x, 0.3, True, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_mask_is_the_same_for_both_dtypes_and_every_thread_count(dtype, num_threads):
    x = randn((300_000,), dtype, seed=10)
    outs = []
    for n in (1, 2):
        num_threads(n)
        torch.manual_seed(11)
        outs.append(lt.Dropout(0.5)(x))
    torch.manual_seed(11)
    other = lt.Dropout(0.5)(x.to(torch.float64 if dtype == torch.float32 else torch.float32))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(outs[0] != 0, other != 0)


def test_dropout_keeps_a_one_bit_mask():
    x = torch.ones(1000, 1001, requires_grad=True)
    out = lt.Dropout(0.5)(x)
    mask = out.grad_fn.mask
    assert isinstance(mask, lec6fast.DropoutMask)
    assert mask.nbytes == math.ceil(1000 * 1001 / 8)
    assert not out.grad_fn.saved_tensors            # no float mask, no input kept


def test_dropout_non_contiguous_input_gives_the_contiguous_inputs_result():
    x = randn((60, 70), torch.float32, seed=12)
    torch.manual_seed(13)
    a = lt.Dropout(0.5)(x.t())
    torch.manual_seed(13)
    b = lt.Dropout(0.5)(x.t().contiguous())
    assert torch.equal(a, b) and a.is_contiguous()
    xt = x.t().clone().requires_grad_()     # a gradient that is not contiguous (expanded)
    torch.manual_seed(13)
    lt.Dropout(0.5)(xt).sum().backward()
    assert torch.equal(xt.grad, (b != 0).float() * 2)


def test_dropout_refuses_double_backward():
    x = torch.ones(100, dtype=torch.float64, requires_grad=True)
    out = lt.Dropout(0.5)(x)
    g, = torch.autograd.grad((out ** 2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice.*once_differentiable"):
        g.sum().backward()


@pytest.mark.parametrize("exc, match, make", [
    (TypeError, "input must be float32 or float64.*torch.int64", lambda: (torch.ones(3, dtype=torch.int64), 0.5)),
    (TypeError, "input must be float32 or float64.*torch.float16", lambda: (torch.ones(3, dtype=torch.float16), 0.5)),
    (TypeError, "input must be a torch.Tensor, got ndarray", lambda: (np.ones(3), 0.5)),
    (ValueError, "input is on meta", lambda: (torch.ones(3, device="meta"), 0.5)),
    (ValueError, "input must be a dense.*sparse", lambda: (torch.ones(3).to_sparse(), 0.5)),
    (ValueError, r"p must be in \[0.0, 1.0\], got 1.5", lambda: (torch.ones(3), 1.5)),
    (ValueError, r"p must be in \[0.0, 1.0\], got -0.1", lambda: (torch.ones(3), -0.1)),
    (TypeError, "p must be a real number, got True", lambda: (torch.ones(3), True)),
    (TypeError, "p must be a real number, got '0.5'", lambda: (torch.ones(3), "0.5")),
])
def test_dropout_refusals_name_the_argument(exc, match, make):
    with pytest.raises(exc, match=match):
        lt.functional.dropout(*make())


def test_dropout_module_refusals():
    with pytest.raises(ValueError, match=r"p \(the drop probability\) must be in \[0, 1\], got 2"):
        lt.Dropout(2)
    with pytest.raises(TypeError, match="p must be a real number"):
        lt.Dropout(None)
    with pytest.raises(ValueError, match="inplace=True is not supported"):
        lt.Dropout(0.5, inplace=True)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        lt.Dropout(0.5, generator=3)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        lt.functional.dropout(torch.ones(3), 0.5, True, 3)
    with pytest.raises(TypeError, match="training must be a bool"):
        lt.functional.dropout(torch.ones(3), 0.5, "yes")
    assert repr(lt.Dropout(0.25)) == "Dropout(p=0.25, inplace=False)"


# ================================================================ BatchNorm

LAYERS = {1: (lt.BatchNorm1d, nn.BatchNorm1d), 2: (lt.BatchNorm2d, nn.BatchNorm2d)}
BN_SHAPES = [(1, (8, 5)), (1, (2, 3)), (1, (257, 33)), (1, (8, 5, 7)), (1, (3, 4, 1)),
             (2, (4, 5, 3, 6)), (2, (2, 3, 1, 1)), (2, (16, 8, 13, 11)), (2, (3, 2, 1, 129))]
LARGE = [(1, (512, 200)), (1, (32, 64, 50)), (2, (16, 32, 16, 16))]    # past the kernels'
                                                                       # threads threshold (65536)
OPTIONS = [dict(), dict(momentum=None), dict(momentum=0.0), dict(momentum=1.0),
           dict(affine=False), dict(bias=False), dict(track_running_stats=False),
           dict(eps=1e-3, momentum=0.3)]


def pair(kind, C, dtype, **options):
    """(lec6fast's layer of dtype, nn's layer in float64), same random parameters."""
    ours, ref = LAYERS[kind]
    a = ours(C, dtype=dtype, **options)
    b = ref(C, dtype=torch.float64, **options)
    if a.weight is not None:
        with torch.no_grad():
            a.weight.copy_(randn((C,), dtype, seed=20, loc=1.0))
            b.weight.copy_(a.weight)
            if a.bias is not None:
                a.bias.copy_(randn((C,), dtype, seed=21))
                b.bias.copy_(a.bias)
    return a, b


def step(layer, x, dout):
    """Forward and backward; returns (out, dx, dweight, dbias)."""
    x = x.detach().clone().requires_grad_()
    out = layer(x)
    out.backward(dout)
    grads = [None if p is None else p.grad.clone() for p in (layer.weight, layer.bias)]
    layer.zero_grad()
    return out.detach(), x.grad, *grads


def assert_same_state(a, b, dtype):
    for name, ref in b.state_dict().items():
        got = a.state_dict()[name]
        if name == "num_batches_tracked":
            assert torch.equal(got, ref)
        else:
            close(got, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, shape, options", [
    pytest.param(kind, shape, options, id=f"{kind}-{shape}-{options}")
    for kind, shape in BN_SHAPES for options in OPTIONS] + [
    pytest.param(kind, shape, options, id=f"{kind}-{shape}-{options}")
    for kind, shape in LARGE for options in (dict(), dict(momentum=None))])
def test_batchnorm_matches_nn_batchnorm_over_several_steps(dtype, kind, shape, options):
    C = shape[1]
    a, b = pair(kind, C, dtype, **options)
    for t in range(4):
        # batches far from zero and of varying scale, as the running statistics see in training
        x = randn(shape, dtype, seed=30 + t, loc=3.0 * t) * (1 + t)
        dout = randn(shape, dtype, seed=40 + t)
        ours, ref = step(a, x, dout), step(b, x.double(), dout.double())
        for got, want in zip(ours, ref):
            assert (got is None) == (want is None)
            if got is not None:
                assert got.dtype == dtype
                close(got, want, dtype)
        assert_same_state(a, b, dtype)
    a.eval(), b.eval()
    x = randn(shape, dtype, seed=50, loc=1.0)
    dout = randn(shape, dtype, seed=51)
    for got, want in zip(step(a, x, dout), step(b, x.double(), dout.double())):
        if got is not None:
            close(got, want, dtype)
    assert_same_state(a, b, dtype)


@pytest.mark.parametrize("kind, shape", [(1, (6, 3)), (1, (4, 3, 5)), (2, (3, 2, 4, 3))], ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradcheck_float64(kind, shape, training):
    C = shape[1]
    x = randn(shape, torch.float64, seed=60).requires_grad_()
    w = randn((C,), torch.float64, seed=61, loc=1.0).requires_grad_()
    b = randn((C,), torch.float64, seed=62).requires_grad_()
    rm, rv = randn((C,), torch.float64, seed=63), randn((C,), torch.float64, seed=64).abs() + 0.5

    def f(x, w, b):
        return lt.functional.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5)
    assert torch.autograd.gradcheck(f, (x, w, b))
    layer = LAYERS[kind][0](C, dtype=torch.float64)
    layer.train(training)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("kind, shape", [(1, (50, 7)), (1, (50, 7, 9)), (2, (6, 7, 5, 4))], ids=str)
def test_batchnorm_eval_gradients_in_float32_are_rounded_once(kind, shape):
    # "statistics and arithmetic in float64, rounded once": each float32 gradient is the exact
    # value correctly rounded, within half a float32 ulp of the float64 computation
    C = shape[1]
    x = randn(shape, torch.float32, seed=65, loc=0.5).requires_grad_()
    w = randn((C,), torch.float32, seed=66, loc=1.0).requires_grad_()
    b = randn((C,), torch.float32, seed=67).requires_grad_()
    rm, rv = randn((C,), torch.float32, seed=68), randn((C,), torch.float32, seed=69).abs() + 0.3
    dout = randn(shape, torch.float32, seed=70)
    out = lt.functional.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5)
    dx, dw, db = torch.autograd.grad(out, (x, w, b), dout)
    view = (1, C) + (1,) * (len(shape) - 2)
    dims = [0] + list(range(2, len(shape)))
    inv_std = 1.0 / torch.sqrt(rv.double() + 1e-5)
    xhat = (x.detach().double() - rm.double().view(view)) * inv_std.view(view)
    for got, exact in ((dx, dout.double() * (w.detach().double() * inv_std).view(view)),
                       (dw, (dout.double() * xhat).sum(dims)), (db, dout.double().sum(dims))):
        half_ulp = (torch.nextafter(got.abs(), torch.tensor(math.inf)) - got.abs()).double() / 2
        assert ((got.double() - exact).abs() <= half_ulp).all()


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0])
def test_batchnorm_float32_running_statistics_within_their_stated_ulps(momentum):
    # the running mean is rounded once (0.5 ulp); the running variance starts from the batch
    # variance the kernel rounds to float32, so two roundings: 1.5 ulps
    x = randn((33, 64), torch.float32, seed=71, loc=1.0) * 3
    rm0, rv0 = randn((64,), torch.float32, seed=72), randn((64,), torch.float32, seed=73).abs()
    rm, rv = rm0.clone(), rv0.clone()
    lt.functional.batch_norm(x, rm, rv, None, None, True, momentum, 1e-5)
    xd = x.double()
    for got, exact, ulps in ((rm, (1 - momentum) * rm0.double() + momentum * xd.mean(0), 0.5),
                             (rv, (1 - momentum) * rv0.double() + momentum * xd.var(0), 1.5)):
        ulp = (torch.nextafter(got.abs(), torch.tensor(math.inf)) - got.abs()).double()
        assert ((got.double() - exact).abs() <= ulps * ulp).all()


def test_batchnorm_state_dicts_load_both_ways():
    for kind, shape in [(1, (8, 5)), (1, (8, 5, 3)), (2, (4, 5, 3, 3))]:
        for momentum in (0.1, None):
            a, b = pair(kind, 5, torch.float32, momentum=momentum)
            b = b.float()
            for t in range(3):
                x = randn(shape, torch.float32, seed=70 + t, loc=t)
                a(x), b(x)
            sa, sb = a.state_dict(), b.state_dict()
            assert list(sa) == list(sb) == ["weight", "bias", "running_mean", "running_var",
                                            "num_batches_tracked"]
            fresh_nn = LAYERS[kind][1](5, momentum=momentum)
            fresh_nn.load_state_dict(sa, strict=True)
            fresh_lt = LAYERS[kind][0](5, momentum=momentum)
            fresh_lt.load_state_dict(sb, strict=True)
            for name, v in sa.items():
                assert torch.equal(fresh_nn.state_dict()[name], v)
            for name, v in sb.items():
                assert torch.equal(fresh_lt.state_dict()[name], v)
            fresh_nn.eval(), fresh_lt.eval()
            x = randn(shape, torch.float32, seed=79)
            torch.testing.assert_close(fresh_lt(x), fresh_nn(x), rtol=1e-5, atol=1e-5)


def test_batchnorm_is_an_nn_batchnorm_module():
    a = lt.BatchNorm2d(4, eps=1e-3, momentum=None, affine=False)
    b = nn.BatchNorm2d(4, eps=1e-3, momentum=None, affine=False)
    assert isinstance(a, nn.modules.batchnorm._BatchNorm)
    assert a.extra_repr() == b.extra_repr()
    assert a.weight is None and a.bias is None and a.running_mean.shape == (4,)
    c = lt.BatchNorm1d(3, track_running_stats=False)
    assert c.running_mean is None and c.num_batches_tracked is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_non_contiguous_input_gives_the_contiguous_inputs_result(dtype):
    x = randn((6, 4, 5, 7), dtype, seed=80, loc=2.0)
    for variant in (x.to(memory_format=torch.channels_last), x.transpose(2, 3).contiguous()
                    .transpose(2, 3)):
        assert not variant.is_contiguous()
        a, b = lt.BatchNorm2d(4, dtype=dtype), lt.BatchNorm2d(4, dtype=dtype)
        ra, dxa, *_ = step(a, variant, torch.ones_like(x))
        rb, dxb, *_ = step(b, x, torch.ones_like(x))
        assert torch.equal(ra, rb) and torch.equal(dxa, dxb)
        assert torch.equal(a.running_var, b.running_var)
    # (N, C, L) transposed from (N, L, C), as a sequence model hands it over
    y = randn((5, 9, 3), dtype, seed=81).transpose(1, 2)
    a, b = lt.BatchNorm1d(3, dtype=dtype), nn.BatchNorm1d(3, dtype=torch.float64)
    close(a(y), b(y.double()), dtype)


def test_batchnorm_eval_on_an_empty_batch_and_refusals_in_training():
    layer = lt.BatchNorm1d(3).eval()
    assert layer(torch.empty(0, 3)).shape == (0, 3)
    layer.train()
    with pytest.raises(ValueError, match=r"expected more than 1 value per channel.*\(1, 3\)"):
        layer(torch.ones(1, 3))
    # nn.BatchNorm refuses the same single-value batch
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        nn.BatchNorm1d(3)(torch.ones(1, 3))


@pytest.mark.parametrize("kind, shape", [(1, (0, 3)), (1, (2, 3, 0)), (1, (0, 3, 4)),
                                         (2, (0, 3, 2, 2)), (2, (2, 3, 0, 4))], ids=str)
@pytest.mark.parametrize("options", [dict(), dict(momentum=None), dict(affine=False),
                                     dict(track_running_stats=False)], ids=str)
def test_batchnorm_trains_on_an_empty_batch_as_nn_batchnorm(kind, shape, options):
    # nn.BatchNorm returns an empty output connected to weight and bias (zero gradients) and
    # leaves the running statistics alone (an empty batch in a detection head, say)
    a, b = pair(kind, 3, torch.float64, **options)
    x, dout = torch.empty(shape, dtype=torch.float64), torch.empty(shape, dtype=torch.float64)
    for _ in range(2):
        ours, ref = step(a, x, dout), step(b, x, dout)
        for got, want in zip(ours, ref):
            assert (got is None) == (want is None)
            if got is not None:
                assert got.shape == want.shape and torch.equal(got, want)
        assert_same_state(a, b, torch.float64)
    assert lt.functional.batch_norm(torch.empty(0, 3), None, None, training=True).shape == (0, 3)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_reads_non_contiguous_weight_bias_and_statistics_as_nn(training):
    # weight and bias are only read (and the running statistics in eval): any strides, as
    # torch.nn.functional.batch_norm takes them
    x = randn((8, 3, 5), torch.float64, seed=85, loc=1.0)
    wbase = randn((6,), torch.float64, seed=86, loc=1.0).requires_grad_()
    b = torch.tensor(0.5, dtype=torch.float64).expand(3)
    rm = randn((9,), torch.float64, seed=87)[::3]
    rv = randn((9,), torch.float64, seed=88).abs()[::3] + 0.5
    if training:
        rm, rv = rm.contiguous(), rv.contiguous()
    outs, grads, stats = [], [], []
    for f in (lt.functional.batch_norm, nn.functional.batch_norm):
        m, v = rm.clone(), rv.clone()
        out = f(x, m, v, wbase[::2], b, training, 0.1, 1e-5)
        outs.append(out)
        grads.append(torch.autograd.grad((out * x).sum(), wbase)[0])
        stats.append((m, v))
    close(outs[0], outs[1], torch.float64)
    close(grads[0], grads[1], torch.float64)
    for got, want in zip(*stats):
        close(got, want, torch.float64)


def test_batchnorm_input_modified_before_backward_is_detected():
    x = randn((8, 3), torch.float32).requires_grad_()
    y = x * 1.0
    out = lt.BatchNorm1d(3)(y)
    with torch.no_grad():
        y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_batchnorm_refuses_double_backward():
    x = randn((8, 3), torch.float64).requires_grad_()
    out = lt.BatchNorm1d(3, dtype=torch.float64)(x)
    g, = torch.autograd.grad((out ** 3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice.*once_differentiable"):
        g.sum().backward()


@pytest.mark.parametrize("exc, match, make", [
    (ValueError, r"BatchNorm1d: input must be 2-D \(N, C\) or 3-D \(N, C, L\), got shape \(4, 3, 2, 2\)",
     lambda: (lt.BatchNorm1d(3), torch.ones(4, 3, 2, 2))),
    (ValueError, r"BatchNorm2d: input must be 4-D \(N, C, H, W\), got shape \(4, 3\)",
     lambda: (lt.BatchNorm2d(3), torch.ones(4, 3))),
    (ValueError, r"BatchNorm1d: input has 4 channels \(shape \(5, 4\)\) but the layer has num_features=3",
     lambda: (lt.BatchNorm1d(3), torch.ones(5, 4))),
    (TypeError, "BatchNorm1d: input must be a torch.Tensor, got list",
     lambda: (lt.BatchNorm1d(3), [[1.0, 2.0, 3.0]])),
    (TypeError, "input must be float32 or float64.*torch.int32",
     lambda: (lt.BatchNorm1d(3), torch.ones(4, 3, dtype=torch.int32))),
    (TypeError, "input must be float32 or float64.*torch.bfloat16",
     lambda: (lt.BatchNorm1d(3), torch.ones(4, 3, dtype=torch.bfloat16))),
    (TypeError, "weight is torch.float32 but input is torch.float64",
     lambda: (lt.BatchNorm1d(3), torch.ones(4, 3, dtype=torch.float64))),
    (ValueError, "input is on meta",
     lambda: (lt.BatchNorm1d(3), torch.ones(4, 3, device="meta"))),
])
def test_batchnorm_module_refusals_name_the_argument(exc, match, make):
    layer, x = make()
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(exc, match=match):
        layer(x)
    for k, v in layer.state_dict().items():
        if k != "num_batches_tracked":          # (counted before the forward, as nn.BatchNorm)
            assert torch.equal(v, state[k]), k


def test_batch_norm_function_refusals_name_the_argument():
    f = lt.functional.batch_norm
    x, c = torch.ones(4, 3), torch.ones(3)
    cases = [
        (ValueError, r"input must be \(N, C\) or \(N, C, \*spatial\), got shape \(3,\)",
         lambda: f(c, c.clone(), c.clone())),
        (ValueError, r"running_mean has shape \(4,\) but input has 3 channels",
         lambda: f(x, torch.ones(4), c.clone())),
        (ValueError, "running_var must be contiguous",
         lambda: f(x, c.clone(), torch.ones(6)[::2], training=True)),
        (ValueError, "running_mean and running_var must both be tensors or both be None",
         lambda: f(x, c.clone(), None, training=True)),
        (ValueError, "training=False normalizes with running_mean and running_var, which are None",
         lambda: f(x, None, None)),
        (ValueError, r"momentum must be in \[0.0, 1.0\], got 1.5",
         lambda: f(x, c.clone(), c.clone(), training=True, momentum=1.5)),
        (ValueError, r"eps must be a finite number > 0.0, got 0.0",
         lambda: f(x, c.clone(), c.clone(), eps=0.0)),
        (ValueError, r"eps must be a finite number > 0.0, got inf",
         lambda: f(x, c.clone(), c.clone(), eps=float("inf"))),
        (TypeError, "eps must be a real number",
         lambda: f(x, c.clone(), c.clone(), eps=None)),
        (TypeError, "bias is torch.float64 but input is torch.float32",
         lambda: f(x, c.clone(), c.clone(), c.clone(), c.double())),
        (TypeError, "training must be a bool",
         lambda: f(x, c.clone(), c.clone(), training=1)),
        (ValueError, "running_mean must not require grad",
         lambda: f(x, c.clone().requires_grad_(), c.clone(), training=True)),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()


def test_models_with_the_layers_copy_and_save():
    import copy
    import io
    torch.manual_seed(90)
    model = nn.Sequential(lt.BatchNorm2d(3), lt.Dropout(0.3), nn.Flatten(), lt.BatchNorm1d(48))
    x = randn((5, 3, 4, 4), torch.float32, seed=91)
    model(x)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    for other in (copy.deepcopy(model), torch.load(buf, weights_only=False)):
        model.eval(), other.eval()
        assert type(other[0]) is lt.BatchNorm2d and type(other[1]) is lt.Dropout
        assert torch.equal(other(x), model(x))


def test_the_public_names():
    assert {"Dropout", "BatchNorm1d", "BatchNorm2d", "functional"} <= set(lt.__all__)
    assert set(lt.functional.__all__) == {"dropout", "batch_norm"}


# ================================================================ the bench section

QUICK = ["--repeat", "1", "--min-repeat", "1", "--budget", "0.01", "--batch-time", "0.0005",
         "--quiet"]


def test_bench_torch_layers_section(capsys, monkeypatch):
    import json
    from lec6fast import cli
    from lec6fast.bench import torch_layers
    small = [("Dropout(p=0.5)", "Dropout", (8, 1001)), ("BatchNorm1d", "BatchNorm1d", (8, 5, 3)),
             ("BatchNorm2d", "BatchNorm2d", (4, 3, 5, 5))]
    monkeypatch.setattr(torch_layers, "CASES", small)
    assert cli.main(["bench", "--json", "--sections", "torch-layers", "--threads", "1",
                     *QUICK]) == 0
    rows = json.loads(capsys.readouterr().out)["torch_layers"]
    assert [(r["case"], tuple(r["shape"])) for r in rows] == [(c, s) for c, _, s in small]
    for r in rows:
        assert r["seconds"] > 0 and r["ratio"] == pytest.approx(r["seconds"] / r["against_s"])
        assert r["threads"] == 1
    assert rows[0]["mask_bytes"] == math.ceil(8 * 1001 / 8)
    assert rows[0]["against_mask_bytes"] == 8 * 1001 * 4         # nn.Dropout's float32 mask
    assert cli.main(["bench", "--sections", "torch-layers", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "Torch layers" in out and "BatchNorm2d" in out and "1,001 / 32,032" in out
    assert cli.main(["bench", "--sections", "torch-layers", "--no-torch", *QUICK]) == 0
    assert "Torch layers: skipped" in capsys.readouterr().out


def test_bench_torch_layers_section_without_torch(run_python):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from lec6fast import cli\n"
            "cli.main(['bench', '--sections', 'torch-layers', '--quiet'])\n")
    out = run_python(code).stdout
    assert "Torch layers: skipped (torch is not installed" in out, out
