"""The update rules of CS231n lecture 6, one row each: the one description of every rule.

A row names the rule's kernel (lec6fast.<kernel> and lec6fast.reference.<kernel>), its
optimizer class (lec6fast.optim.<optimizer> and lec6fast.reference.<optimizer>), the state
arrays it keeps per parameter, its hyperparameters with their ranges and defaults (the
lecture's, and torch's where lec6fast.optim's convention="torch" differs), whether it needs the
step number t, the arrays it moves per element (for GB/s) and its torch equivalent.  The
optimizers, the benchmarks and the tests read this table; a test holds the kernels' and the
references' signatures to it.  Adding a rule: its kernel, its reference and one row.
"""

from dataclasses import dataclass

# Ranges, as the kernels check them: "nonneg" finite >= 0, "positive" finite > 0,
# "unit" in [0, 1), "prob" in (0, 1].
RANGE_TEXT = {"nonneg": "a finite number >= 0", "positive": "a finite number > 0",
              "unit": "in [0, 1)", "prob": "in (0, 1]"}


@dataclass(frozen=True)
class Hyper:
    name: str
    range: str
    default: float = None           # None: the caller must give it
    torch_default: float = None     # convention="torch" (None: same as default)


@dataclass(frozen=True)
class Rule:
    name: str
    kernel: str                     # lec6fast.<kernel>, updating x (and the state) in place
    optimizer: str                  # lec6fast.optim.<optimizer>; None: a kernel only
    state: tuple                    # the state arrays per parameter, in the kernel's order
    hypers: tuple                   # Hyper rows, lr first, in the kernel's keyword order
    needs_t: bool                   # takes the 1-based step number t
    streams: int                    # arrays read + arrays written per element
    torch: str                      # the torch equivalent

    @property
    def arrays(self):
        """The kernel's positional arrays, in order: what it updates first, then what it reads,
        then the state."""
        return ("x_avg", "x") if self.name == "ema" else ("x", "dx") + self.state

    @property
    def outputs(self):
        """The arrays the kernel writes."""
        return (self.arrays[0],) + self.state

    def hyper(self, name):
        return next(h for h in self.hypers if h.name == name)

    def defaults(self, convention="lecture"):
        """{name: default} of the hyperparameters that have one, in `convention`."""
        return {h.name: (h.torch_default if convention == "torch" and h.torch_default is not None
                         else h.default)
                for h in self.hypers if h.default is not None}


LR = Hyper("lr", "nonneg")
MU = Hyper("mu", "unit", 0.9)

RULES = {r.name: r for r in (
    Rule("sgd", "sgd_", "SGD", (), (LR,), False, 3, "torch.optim.SGD"),
    Rule("momentum", "momentum_", "Momentum", ("v",), (LR, MU), False, 5,
         "torch.optim.SGD(momentum=mu) (another velocity form: see convention='torch')"),
    Rule("nesterov", "nesterov_", "Nesterov", ("v",), (LR, MU), False, 5,
         "torch.optim.SGD(momentum=mu, nesterov=True) (another form: see convention='torch')"),
    Rule("adagrad", "adagrad_", "AdaGrad", ("cache",), (LR, Hyper("eps", "positive", 1e-7, 1e-10)),
         False, 5, "torch.optim.Adagrad"),
    Rule("rmsprop", "rmsprop_", "RMSProp", ("cache",),
         (LR, Hyper("decay_rate", "unit", 0.99), Hyper("eps", "positive", 1e-7, 1e-8)),
         False, 5, "torch.optim.RMSprop(alpha=decay_rate)"),
    Rule("adam", "adam_", "Adam", ("m", "v"),
         (Hyper("lr", "nonneg", 1e-3), Hyper("beta1", "unit", 0.9), Hyper("beta2", "unit", 0.999),
          Hyper("eps", "positive", 1e-7, 1e-8)),
         True, 7, "torch.optim.Adam(betas=(beta1, beta2))"),
    Rule("ema", "ema_", None, (), (Hyper("decay", "unit", 0.995),), False, 3,
         "torch.optim.swa_utils.AveragedModel (get_ema_multi_avg_fn)"),
)}

OPTIMIZERS = {r.optimizer: r for r in RULES.values() if r.optimizer}

# What every optimizer of lec6fast.optim takes besides its rule's hyperparameters.
# Per parameter group (a group dict may override them):
GROUP_HYPERS = (Hyper("weight_decay", "nonneg", 0.0),)
GROUP_FLAGS = ("decoupled_weight_decay",)
# For the whole step (the optimizer's only):
CLIP_NORM = Hyper("clip_norm", "positive")
EMA_DECAY = Hyper("ema_decay", "unit")
