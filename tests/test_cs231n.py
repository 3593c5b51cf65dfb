"""lec6fast.cs231n against the CS231n assignment: the FullyConnectedNets / Dropout /
BatchNormalization notebooks' published checks, the assignment's formulas and config keys, and
a Solver-style training loop."""

import numpy as np
import pytest

from lec6fast import cs231n

from conftest import Bits, normal


def rel_error(x, y):
    """The notebooks' relative error."""
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


N, D = 4, 5


def linspace(a, b):
    return np.linspace(a, b, num=N * D).reshape(N, D)


# ---------------------------------------------------------------- the notebooks' checks
# (FullyConnectedNets.ipynb; its expected arrays are printed to 8 decimals, so the canonical
# solutions' errors are ~1e-8 for momentum and ~1e-7 for RMSProp and Adam, as the notebook says)

def test_sgd_momentum_notebook_check():
    w, dw, v = linspace(-0.4, 0.6), linspace(-0.6, 0.4), linspace(0.6, 0.9)
    config = {"learning_rate": 1e-3, "velocity": v}
    next_w, _ = cs231n.sgd_momentum(w, dw, config=config)
    expected_next_w = np.asarray([
        [0.1406, 0.20738947, 0.27417895, 0.34096842, 0.40775789],
        [0.47454737, 0.54133684, 0.60812632, 0.67491579, 0.74170526],
        [0.80849474, 0.87528421, 0.94207368, 1.00886316, 1.07565263],
        [1.14244211, 1.20923158, 1.27602105, 1.34281053, 1.4096]])
    expected_velocity = np.asarray([
        [0.5406, 0.55475789, 0.56891579, 0.58307368, 0.59723158],
        [0.61138947, 0.62554737, 0.63970526, 0.65386316, 0.66802105],
        [0.68217895, 0.69633684, 0.71049474, 0.72465263, 0.73881053],
        [0.75296842, 0.76712632, 0.78128421, 0.79544211, 0.8096]])
    assert rel_error(next_w, expected_next_w) < 1e-8
    assert rel_error(expected_velocity, config["velocity"]) < 1e-8


def test_rmsprop_notebook_check():
    w, dw, cache = linspace(-0.4, 0.6), linspace(-0.6, 0.4), linspace(0.6, 0.9)
    config = {"learning_rate": 1e-2, "cache": cache}
    next_w, _ = cs231n.rmsprop(w, dw, config=config)
    expected_next_w = np.asarray([
        [-0.39223849, -0.34037513, -0.28849239, -0.23659121, -0.18467247],
        [-0.132737, -0.08078555, -0.02881884, 0.02316247, 0.07515774],
        [0.12716641, 0.17918792, 0.23122175, 0.28326742, 0.33532447],
        [0.38739248, 0.43947102, 0.49155973, 0.54365823, 0.59576619]])
    expected_cache = np.asarray([
        [0.5976, 0.6126277, 0.6277108, 0.64284931, 0.65804321],
        [0.67329252, 0.68859723, 0.70395734, 0.71937285, 0.73484377],
        [0.75037008, 0.7659518, 0.78158892, 0.79728144, 0.81302936],
        [0.82883269, 0.84469141, 0.86060554, 0.87657507, 0.8926]])
    assert rel_error(expected_next_w, next_w) < 2e-7
    assert rel_error(expected_cache, config["cache"]) < 2e-7


def test_adam_notebook_check():
    w, dw, m, v = linspace(-0.4, 0.6), linspace(-0.6, 0.4), linspace(0.6, 0.9), linspace(0.7, 0.5)
    config = {"learning_rate": 1e-2, "m": m, "v": v, "t": 5}
    next_w, _ = cs231n.adam(w, dw, config=config)
    expected_next_w = np.asarray([
        [-0.40094747, -0.34836187, -0.29577703, -0.24319299, -0.19060977],
        [-0.1380274, -0.08544591, -0.03286534, 0.01971428, 0.0722929],
        [0.1248705, 0.17744702, 0.23002243, 0.28259667, 0.33516969],
        [0.38774145, 0.44031188, 0.49288093, 0.54544852, 0.59801459]])
    expected_v = np.asarray([
        [0.69966, 0.68908382, 0.67851319, 0.66794809, 0.65738853],
        [0.64683452, 0.63628604, 0.6257431, 0.61520571, 0.60467385],
        [0.59414753, 0.58362676, 0.57311152, 0.56260183, 0.55209767],
        [0.54159906, 0.53110598, 0.52061845, 0.51013645, 0.49966]])
    expected_m = np.asarray([
        [0.48, 0.49947368, 0.51894737, 0.53842105, 0.55789474],
        [0.57736842, 0.59684211, 0.61631579, 0.63578947, 0.65526316],
        [0.67473684, 0.69421053, 0.71368421, 0.73315789, 0.75263158],
        [0.77210526, 0.79157895, 0.81105263, 0.83052632, 0.85]])
    assert rel_error(expected_next_w, next_w) < 2e-7     # the canonical solution: 1.1396e-07
    assert rel_error(expected_v, config["v"]) < 1e-7
    assert rel_error(expected_m, config["m"]) < 1e-7
    assert config["t"] == 6                               # incremented before it is used


# ---------------------------------------------------------------- the assignment's formulas

def skeleton(rule, w, dw, config):
    """The update rules as the assignment's solutions write them (float64 NumPy)."""
    c = config
    if rule == "sgd":
        return w - c["learning_rate"] * dw
    if rule == "sgd_momentum":
        c["velocity"] = c["momentum"] * c["velocity"] - c["learning_rate"] * dw
        return w + c["velocity"]
    if rule == "nesterov_momentum":
        v_prev = c["velocity"]
        c["velocity"] = c["momentum"] * v_prev - c["learning_rate"] * dw
        return w - c["momentum"] * v_prev + (1 + c["momentum"]) * c["velocity"]
    if rule == "adagrad":
        c["cache"] = c["cache"] + dw**2
        return w - c["learning_rate"] * dw / (np.sqrt(c["cache"]) + c["epsilon"])
    if rule == "rmsprop":
        c["cache"] = c["decay_rate"] * c["cache"] + (1 - c["decay_rate"]) * dw**2
        return w - c["learning_rate"] * dw / (np.sqrt(c["cache"]) + c["epsilon"])
    c["t"] += 1
    c["m"] = c["beta1"] * c["m"] + (1 - c["beta1"]) * dw
    c["v"] = c["beta2"] * c["v"] + (1 - c["beta2"]) * dw**2
    mt = c["m"] / (1 - c["beta1"] ** c["t"])
    vt = c["v"] / (1 - c["beta2"] ** c["t"])
    return w - c["learning_rate"] * mt / (np.sqrt(vt) + c["epsilon"])


DEFAULTS = {
    "sgd": {"learning_rate": 1e-2},
    "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "nesterov_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "adagrad": {"learning_rate": 1e-2, "epsilon": 1e-8},
    "rmsprop": {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "t": 0},
}
STATE = {"sgd": (), "sgd_momentum": ("velocity",), "nesterov_momentum": ("velocity",),
         "adagrad": ("cache",), "rmsprop": ("cache",), "adam": ("m", "v")}


@pytest.mark.parametrize("rule", list(DEFAULTS))
def test_defaults_keys_and_in_place_updates(rule):
    w = normal((30, 7), np.float64, 1)
    same_w = w
    next_w, config = getattr(cs231n, rule)(w, normal((30, 7), np.float64, 2))
    assert next_w is same_w                                 # updated in place
    assert {k: config[k] for k in DEFAULTS[rule]} == {**DEFAULTS[rule], **(
        {"t": 1} if rule == "adam" else {})}
    assert set(config) == set(DEFAULTS[rule]) | set(STATE[rule])


@pytest.mark.parametrize("rule", list(DEFAULTS))
def test_twenty_steps_follow_the_assignments_formula(rule):
    w = normal((13, 9), np.float64, 3)
    want = w.copy()
    config = None
    ref = dict(DEFAULTS[rule], **{k: np.zeros_like(w) for k in STATE[rule]})
    rng = np.random.default_rng(4)
    for _ in range(20):
        dw = rng.standard_normal(w.shape)
        w, config = getattr(cs231n, rule)(w, dw, config)
        want = skeleton(rule, want, dw, ref)
    tol = 1e-15 if rule != "nesterov_momentum" else 1e-12   # (the lecture's form, reassociated)
    np.testing.assert_allclose(w, want, rtol=tol, atol=tol)
    if rule == "adam":
        Bits.assert_equal(w, want)                       # the same operations, the same bits


def test_inputs_it_cannot_update_in_place_are_replaced_and_returned():
    base = normal((10, 8), np.float64, 5)
    w = base[:, ::2]                                     # a non-contiguous slice
    dw = np.ones((10, 4), np.float32)                    # another dtype: converted
    next_w, config = cs231n.sgd_momentum(w, dw, {"learning_rate": 0.1, "velocity": [[0.0] * 4] * 10})
    assert next_w is not w and next_w.flags.c_contiguous
    np.testing.assert_array_equal(next_w, w - 0.1)       # w itself untouched, the update returned
    assert isinstance(config["velocity"], np.ndarray) and config["velocity"].dtype == np.float64
    ints = np.arange(6).reshape(2, 3)
    next_w, _ = cs231n.sgd(ints, np.ones((2, 3)))
    assert next_w.dtype == np.float64 and (next_w == ints - 0.01).all()


def test_float32_parameters_stay_float32():
    w = normal((64,), np.float32, 6)
    next_w, config = cs231n.adam(w, normal((64,), np.float64, 7))
    assert next_w is w and config["m"].dtype == np.float32


def test_a_solver_style_loop_trains_a_softmax_classifier():
    """What the assignment's Solver does each step: update_rule(w, dw, config) for every
    parameter, then store next_w and next_config back."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((200, 10))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    params = {"W": 0.01 * rng.standard_normal((10, 2)), "b": np.zeros(2)}

    def loss(p):
        s = X @ p["W"] + p["b"]
        s -= s.max(axis=1, keepdims=True)
        prob = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
        value = -np.log(prob[np.arange(len(y)), y]).mean()
        prob[np.arange(len(y)), y] -= 1
        prob /= len(y)
        return value, {"W": X.T @ prob, "b": prob.sum(axis=0)}

    configs = {k: {"learning_rate": 0.1} for k in params}
    first = loss(params)[0]
    for _ in range(100):
        _, grads = loss(params)
        for k in params:
            next_w, next_config = cs231n.adam(params[k], grads[k], configs[k])
            params[k], configs[k] = next_w, next_config
    assert loss(params)[0] < 0.5 * first and configs["W"]["t"] == 100


# ---------------------------------------------------------------- dropout (Dropout.ipynb)

@pytest.mark.parametrize("p", [0.25, 0.4, 0.7])
def test_dropout_means_as_the_notebook_checks(p):
    np.random.seed(231)
    x = np.random.randn(500, 500) + 10
    out, _ = cs231n.dropout_forward(x, {"mode": "train", "p": p})
    out_test, _ = cs231n.dropout_forward(x, {"mode": "test", "p": p})
    assert abs(out.mean() - x.mean()) < 0.05 * x.mean()      # inverted: the mean is kept
    assert out_test is x
    assert abs((out == 0).mean() - (1 - p)) < 0.01             # the fraction set to zero


def test_dropout_backward_and_seeds():
    x = normal((10, 10), np.float64, 9) + 10
    dout = normal((10, 10), np.float64, 10)
    param = {"mode": "train", "p": 0.2, "seed": 123}
    out, cache = cs231n.dropout_forward(x, param)
    dx = cs231n.dropout_backward(dout, cache)
    keep = out != 0
    np.testing.assert_allclose(dx, np.where(keep, dout / 0.2, 0.0), rtol=1e-15, atol=0)
    assert (cs231n.dropout_forward(x, param)[0] == out).all()        # a seed: the same mask
    np.random.seed(1)
    a = cs231n.dropout_forward(x, {"mode": "train", "p": 0.5})[0]
    np.random.seed(1)
    b = cs231n.dropout_forward(x, {"mode": "train", "p": 0.5})[0]
    assert (a == b).all()                                    # np.random.seed makes it repeat
    assert cs231n.dropout_backward(dout, cs231n.dropout_forward(x, {"mode": "test", "p": 0.5})[1]) is dout


# ---------------------------------------------------------------- batch norm (BatchNormalization.ipynb)

def test_batchnorm_train_and_test_statistics_as_the_notebook_checks():
    np.random.seed(231)
    N, D1, D2, D3 = 200, 50, 60, 3
    W1, W2 = np.random.randn(D1, D2), np.random.randn(D2, D3)
    a = np.maximum(0, np.random.randn(N, D1).dot(W1)).dot(W2)
    gamma, beta = np.asarray([1.0, 2.0, 3.0]), np.asarray([11.0, 12.0, 13.0])
    out, _ = cs231n.batchnorm_forward(a, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=0), gamma, rtol=1e-4)
    bn_param = {"mode": "train"}
    for _ in range(50):
        X = np.random.randn(N, D1)
        cs231n.batchnorm_forward(np.maximum(0, X.dot(W1)).dot(W2), np.ones(D3), np.zeros(D3), bn_param)
    bn_param["mode"] = "test"
    a = np.maximum(0, np.random.randn(N, D1).dot(W1)).dot(W2)
    out, cache = cs231n.batchnorm_forward(a, np.ones(D3), np.zeros(D3), bn_param)
    assert cache is None
    assert np.abs(out.mean(axis=0)).max() < 0.2 and np.abs(out.std(axis=0) - 1).max() < 0.2


def numerical_gradient(f, x, dout, h=1e-5):
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        pos = f(x).copy()
        x[i] = old - h
        neg = f(x).copy()
        x[i] = old
        grad[i] = np.sum((pos - neg) * dout) / (2 * h)
    return grad


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4, 5)])
def test_batchnorm_gradients_by_finite_differences(shape):
    np.random.seed(231)
    x = 5 * np.random.randn(*shape) + 12
    C = shape[1]
    gamma, beta = np.random.randn(C), np.random.randn(C)
    dout = np.random.randn(*shape)
    forward = cs231n.batchnorm_forward if len(shape) == 2 else cs231n.spatial_batchnorm_forward
    backward = cs231n.batchnorm_backward if len(shape) == 2 else cs231n.spatial_batchnorm_backward
    f = lambda v: forward(v, gamma, beta, {"mode": "train"})[0]            # noqa: E731
    dx_num = numerical_gradient(f, x, dout)
    dg_num = numerical_gradient(lambda g: forward(x, g, beta, {"mode": "train"})[0], gamma, dout)
    db_num = numerical_gradient(lambda b: forward(x, gamma, b, {"mode": "train"})[0], beta, dout)
    _, cache = forward(x, gamma, beta, {"mode": "train"})
    dx, dgamma, dbeta = backward(dout, cache)
    assert rel_error(dx_num, dx) < 1e-6
    assert rel_error(dg_num, dgamma) < 1e-8 and rel_error(db_num, dbeta) < 1e-8
    dx_alt = cs231n.batchnorm_backward_alt(dout, cache)[0]
    Bits.assert_equal(dx_alt, dx)


def test_batchnorm_running_statistics_live_in_bn_param():
    bn_param = {"mode": "train", "momentum": 0.5}
    x = normal((8, 3), np.float64, 11)
    cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], 0.5 * x.mean(axis=0))
    np.testing.assert_allclose(bn_param["running_var"], 0.5 * x.var(axis=0))
    with pytest.raises(ValueError, match="mode"):
        cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "eval"})


def test_0d_parameters_and_inputs_keep_their_shape():
    next_w, _ = cs231n.sgd(np.array(1.0), np.array(0.5))
    assert next_w.shape == () and next_w == 1.0 - 0.01 * 0.5
    out, cache = cs231n.dropout_forward(np.array(2.0), {"mode": "train", "p": 0.5, "seed": 0})
    assert out.shape == () and cs231n.dropout_backward(np.array(1.0), cache).shape == ()


def test_state_that_aliases_dw_or_other_state_is_copied_not_refused():
    w, dw = np.ones(3), np.full(3, 0.5)
    config = {"velocity": dw}                               # the same array as dw
    next_w, config = cs231n.sgd_momentum(w, dw, config)
    np.testing.assert_array_equal(config["velocity"], 0.9 * 0.5 - 0.01 * 0.5)
    np.testing.assert_array_equal(dw, 0.5)                  # dw itself untouched
    shared = np.zeros(3)
    _, config = cs231n.adam(np.ones(3), dw, {"m": shared, "v": shared})
    assert not np.shares_memory(config["m"], config["v"])
    _, config = cs231n.sgd_momentum(np.ones(3), dw, {"velocity": 0})   # a scalar: broadcast
    assert config["velocity"].shape == (3,)
