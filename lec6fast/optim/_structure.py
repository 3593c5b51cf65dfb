"""What users hold as a model's parameters, and the flat list the fused step walks.

params is a dict name -> array (CS231n's model.params), a list/tuple of arrays, or a list of
parameter groups [{"params": dict or list, "lr": ..., ...}, ...].  grads mirrors it: a dict with
the same keys (for groups of dicts: one dict with every key, or one structure per group), or a
list/tuple in the same order.
"""

import numpy as np


class Structure:
    """The parameters' structure: groups of (key, name) in step order.

    groups[g] = (kind, keys, overrides): kind "dict" or "list", keys the dict keys (or indices),
    overrides the group's hyperparameters (empty when params is not a list of groups).
    """

    def __init__(self, params):
        self.grouped = isinstance(params, (list, tuple)) and len(params) > 0 and all(
            isinstance(g, dict) and "params" in g for g in params)
        if isinstance(params, (list, tuple)) and not self.grouped and any(
                isinstance(g, dict) for g in params):
            raise TypeError("params: a list of parameter groups must hold dicts that each have a "
                            "'params' entry")
        groups = params if self.grouped else [{"params": params}]
        self.groups, self.arrays, self.names, self.gnames = [], [], [], []
        for g, group in enumerate(groups):
            inner = group["params"]
            overrides = {k: v for k, v in group.items() if k != "params"}
            where = f"param_groups[{g}]['params']" if self.grouped else "params"
            if isinstance(inner, dict):
                keys = list(inner)
                bad = [k for k in keys if not isinstance(k, str)]
                if bad:
                    raise TypeError(f"{where}: keys must be strings (parameter names), got {bad[0]!r}")
                kind = "dict"
                names = [f"params[{k!r}]" for k in keys]
                gnames = [f"grads[{k!r}]" for k in keys]
            elif isinstance(inner, (list, tuple)):
                keys = list(range(len(inner)))
                kind = "list"
                names = [f"{where}[{i}]" for i in keys]
                gnames = [(f"grads[{g}][{i}]" if self.grouped else f"grads[{i}]") for i in keys]
            else:
                raise TypeError(f"{where} must be a dict name -> array, a list or tuple of arrays, "
                                f"or a list of parameter groups (dicts with 'params'); got "
                                f"{type(inner).__name__}")
            self.groups.append((kind, keys, overrides))
            self.arrays += [inner[k] for k in keys]
            self.names += names
            self.gnames += gnames
        if not self.arrays:
            raise ValueError("params is empty: the optimizer has nothing to update")
        dict_keys = [k for kind, keys, _ in self.groups if kind == "dict" for k in keys]
        if len(set(dict_keys)) != len(dict_keys):
            dup = next(k for k in dict_keys if dict_keys.count(k) > 1)
            raise ValueError(f"params: the name {dup!r} is in more than one group")
        # every parameter's name, when every group is a dict (grads may then be one dict)
        self.keys = (None if any(kind != "dict" for kind, _, _ in self.groups)
                     else [k for _, ks, _ in self.groups for k in ks])
        self.slices = []
        start = 0
        for _, keys, _ in self.groups:
            self.slices.append(slice(start, start + len(keys)))
            start += len(keys)

    def flatten(self, grads):
        """The gradients as a list in step order (any array-like objects; the step checks them)."""
        if type(grads) is dict and self.keys is not None and len(grads) == len(self.keys):
            try:
                return [grads[k] for k in self.keys]        # the common case, checked fast
            except KeyError:
                pass
        if isinstance(grads, dict) and self.keys is not None:
            keys = self.keys
            missing = [k for k in keys if k not in grads]
            if missing:
                raise ValueError(f"grads lacks {missing[0]!r}: it must have the same keys as params "
                                 f"({len(keys)} of them)")
            if len(grads) != len(keys):
                extra = [k for k in grads if k not in set(keys)]
                raise ValueError(f"grads has {extra[0]!r}, which is not a parameter; it must have "
                                 f"the same keys as params")
            return [grads[k] for k in keys]
        if self.grouped:
            if not isinstance(grads, (list, tuple)) or len(grads) != len(self.groups):
                raise ValueError(f"grads must mirror params: one dict of every name, or a list of "
                                 f"{len(self.groups)} structures (one per group), got "
                                 f"{type(grads).__name__}")
            out = []
            for g, ((kind, keys, _), sub) in enumerate(zip(self.groups, grads)):
                out += self._flat_group(kind, keys, sub, f"grads[{g}]")
            return out
        kind, keys, _ = self.groups[0]
        return self._flat_group(kind, keys, grads, "grads")

    @staticmethod
    def _flat_group(kind, keys, sub, where):
        if kind == "dict":
            if not isinstance(sub, dict):
                raise TypeError(f"{where} must be a dict of the same keys as the params, got "
                                f"{type(sub).__name__}")
            missing = [k for k in keys if k not in sub]
            if missing:
                raise ValueError(f"{where} lacks {missing[0]!r}")
            if len(sub) != len(keys):
                extra = [k for k in sub if k not in set(keys)]
                raise ValueError(f"{where} has {extra[0]!r}, which is not a parameter")
            return [sub[k] for k in keys]
        if not isinstance(sub, (list, tuple)):
            raise TypeError(f"{where} must be a list or tuple in the order of the params, got "
                            f"{type(sub).__name__}")
        if len(sub) != len(keys):
            raise ValueError(f"{where} has {len(sub)} arrays but the params have {len(keys)}")
        return list(sub)

    def unflatten(self, arrays):
        """arrays (step order) in the params' structure."""
        out = []
        for (kind, keys, _), sl in zip(self.groups, self.slices):
            part = arrays[sl]
            out.append(dict(zip(keys, part)) if kind == "dict" else list(part))
        return out if self.grouped else out[0]
