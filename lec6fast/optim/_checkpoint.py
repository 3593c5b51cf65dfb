"""Save and resume an optimizer: state_dict() as plain data, and .npz files written atomically.

The state dict:
    format      "lec6fast.optim/1"
    optimizer   the class name ("Adam"), convention, t
    clip_norm, ema_decay, last_grad_norm
    names, shapes, dtypes   of the parameters, in step order
    param_groups    per group: its hyperparameters (a float, a bool, or the string "schedule"
                    for a callable, which cannot be saved) and "params": its parameter names
    state       {state name: [one array per parameter]}  (copies)
    ema         [one array per parameter] or None
save() writes a checkpoint of training: the state dict and the parameters themselves, in an
.npz holding "meta" (the state dict without arrays, as JSON text), "params/<i>",
"state/<name>/<i>" and "ema/<i>"; no pickled objects.  load() restores both, the parameters in
place into the arrays the optimizer updates.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "lec6fast.optim/1"
SCHEDULE = "schedule"


def state_dict(opt):
    opt._hyper_table(max(opt.t, 1))         # the groups as they are now are valid
    groups = []
    for group, sl in zip(opt.param_groups, opt._structure.slices):
        g = {k: (SCHEDULE if callable(v) else bool(v) if k == "decoupled_weight_decay"
                 else float(v)) for k, v in group.items() if k != "params"}
        g["params"] = opt._structure.names[sl]
        groups.append(g)
    return {
        "format": FORMAT, "optimizer": type(opt).__name__, "convention": opt.convention,
        "t": opt.t, "clip_norm": opt.clip_norm, "ema_decay": opt.ema_decay,
        "last_grad_norm": opt.last_grad_norm,
        "names": list(opt._structure.names), "shapes": [list(s) for s in opt._shapes],
        "dtypes": list(opt._dtypes), "param_groups": groups,
        "state": {name: [s[k].copy() for s in opt._state] for k, name in enumerate(opt.rule.state)},
        "ema": None if opt.ema_decay is None else [a.copy() for a in opt._ema],
    }


def _differs(what, saved, here):
    raise ValueError(f"load_state_dict: the saved optimizer's {what} is {saved!r} but this "
                     f"one's is {here!r}; nothing was loaded")


def load_state_dict(opt, sd, params=None):
    """Check everything against opt, then restore (and copy params, if given, into the
    optimizer's parameters); nothing changes when a check fails."""
    if not isinstance(sd, dict) or sd.get("format") != FORMAT:
        raise ValueError(f"load_state_dict: not a lec6fast optimizer state dict (expected "
                         f"format {FORMAT!r}, got {sd.get('format') if isinstance(sd, dict) else type(sd).__name__!r})")
    mine = state_dict(opt)
    for key in ("optimizer", "convention", "names", "shapes", "dtypes", "clip_norm", "ema_decay"):
        saved = sd.get(key)
        if key == "shapes" and saved is not None:
            saved = [list(s) for s in saved]
        if saved != mine[key]:
            _differs(key, saved, mine[key])
    t = sd.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
        raise ValueError(f"load_state_dict: t must be an integer >= 0, got {t!r}")
    groups = sd.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(opt.param_groups):
        _differs("number of parameter groups", len(groups) if isinstance(groups, list) else groups,
                 len(opt.param_groups))
    trial = [dict(group) for group in opt.param_groups]
    for g, (saved, group) in enumerate(zip(groups, trial)):
        if not isinstance(saved, dict) or saved.get("params") != mine["param_groups"][g]["params"]:
            _differs(f"group {g}'s parameters", saved.get("params") if isinstance(saved, dict)
                     else saved, mine["param_groups"][g]["params"])
        keys = set(saved) - {"params"}
        if keys != set(group) - {"params"}:
            _differs(f"group {g}'s hyperparameters", sorted(keys), sorted(set(group) - {"params"}))
        for k in keys:
            if saved[k] == SCHEDULE:
                if not callable(group[k]):
                    raise ValueError(f"load_state_dict: group {g}'s {k!r} was a schedule when it "
                                     f"was saved (a schedule cannot be saved); give this "
                                     f"optimizer the same schedule")
            else:
                group[k] = saved[k]
    opt._hyper_table(max(int(t), 1), trial)     # every saved hyperparameter is valid
    arrays = []
    state = sd.get("state")
    if not isinstance(state, dict) or set(state) != set(opt.rule.state):
        _differs("state arrays", sorted(state) if isinstance(state, dict) else state,
                 list(opt.rule.state))
    for k, name in enumerate(opt.rule.state):
        arrays += _pairs(f"state[{name!r}]", state[name], [s[k] for s in opt._state])
    if opt.ema_decay is not None:
        arrays += _pairs("ema", sd.get("ema"), opt._ema)
    if params is not None:
        arrays += _pairs("params", params, opt._params)
        for name, x in zip(opt._structure.names, opt._params):
            if not x.flags.writeable:
                raise ValueError(f"load: {name} is read-only, so the checkpoint's parameters "
                                 f"cannot be restored into it; nothing was loaded")
    norm = sd.get("last_grad_norm")
    if norm is not None and (isinstance(norm, bool) or not isinstance(norm, (int, float))):
        raise ValueError(f"load_state_dict: last_grad_norm must be a number or None, got {norm!r}")
    # Everything fits: restore.
    for src, dst in arrays:
        np.copyto(dst, src)
    for group, new in zip(opt.param_groups, trial):
        group.update(new)
    opt.t = int(t)
    opt.last_grad_norm = None if norm is None else float(norm)


def _pairs(what, saved, mine):
    if not isinstance(saved, (list, tuple)) or len(saved) != len(mine):
        _differs(f"{what} (number of arrays)", len(saved) if isinstance(saved, (list, tuple))
                 else saved, len(mine))
    for i, (a, b) in enumerate(zip(saved, mine)):
        if not isinstance(a, np.ndarray) or a.shape != b.shape or a.dtype != b.dtype:
            _differs(f"{what}[{i}]", f"{getattr(a, 'dtype', type(a).__name__)} "
                                     f"{getattr(a, 'shape', '')}", f"{b.dtype} {b.shape}")
    return list(zip(saved, mine))


def save(opt, path):
    sd = state_dict(opt)
    arrays = {f"state/{name}/{i}": a for name, lst in sd.pop("state").items()
              for i, a in enumerate(lst)}
    arrays.update({f"params/{i}": a for i, a in enumerate(opt._params)})
    sd["state"] = list(opt.rule.state)
    ema = sd.pop("ema")
    if ema is not None:
        arrays.update({f"ema/{i}": a for i, a in enumerate(ema)})
    meta = json.dumps(sd, allow_nan=False)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lec6fast-", suffix=".npz.tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)       # as open() would create it (mkstemp makes it 0600)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(meta), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):          # the rename itself, on POSIX
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def load(opt, path):
    path = os.fspath(path)
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
        meta = json.loads(str(files.pop("meta")[()]))
        sd = dict(meta)
        sd["state"] = {name: [files.pop(f"state/{name}/{i}") for i in range(len(meta["names"]))]
                       for name in meta["state"]}
        sd["ema"] = (None if meta.get("ema_decay") is None
                     else [files.pop(f"ema/{i}") for i in range(len(meta["names"]))])
        params = [files.pop(f"params/{i}") for i in range(len(meta["names"]))]
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable lec6fast optimizer checkpoint "
                         f"({type(e).__name__}: {e})") from e
    load_state_dict(opt, sd, params)
