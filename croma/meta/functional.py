"""Parameters as dicts of tensors and a functional forward over any ``nn.Module``.

The meta-learner never mutates a module: the meta-parameters ``theta`` are a plain
``{name: tensor}`` dict (names as in ``model.named_parameters()``), task parameters are new
dicts, and the model is run with :class:`FunctionalModel`, a thin layer over
``torch.func.functional_call``. One call runs an arbitrary function of the model (e.g. a whole
task loss: two encoders, the alignment layer and the objective) with the given parameters
swapped in, so that ``torch.func.grad`` and ``vmap`` apply to it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from torch.func import functional_call

__all__ = [
    "Params",
    "FunctionalModel",
    "meta_parameters",
    "load_parameters",
    "split_params",
    "tree_add",
    "tree_sub",
    "tree_scale",
    "tree_zeros_like",
    "tree_all_finite",
    "tree_to",
    "tree_equal",
]

Params = dict[str, torch.Tensor]


def meta_parameters(model: nn.Module) -> Params:
    """Detached copies of all trainable (``requires_grad``) parameters of ``model``.

    Returns:
        ``{name: tensor}`` in ``named_parameters`` order; the tensors own their storage, so
        nothing done to them touches the module (and vice versa).
    """
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_parameters(model: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Copy ``params`` into the matching parameters of ``model`` (in place, no autograd).

    Raises:
        KeyError: a name in ``params`` is not a parameter of ``model``.
    """
    own = dict(model.named_parameters())
    for name, value in params.items():
        if name not in own:
            raise KeyError(f"{name!r} is not a parameter of {type(model).__name__}")
        own[name].copy_(value)


def split_params(params: Mapping[str, torch.Tensor], keep: Callable[[str], bool]) -> tuple[Params, Params]:
    """Split ``params`` into ``(selected, rest)`` by the predicate ``keep(name)``."""
    sel = {k: v for k, v in params.items() if keep(k)}
    rest = {k: v for k, v in params.items() if not keep(k)}
    return sel, rest


def tree_add(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> Params:
    """``a + b`` key-wise (keys of ``a``; a key missing from ``b`` counts as 0)."""
    return {k: (v + b[k]) if k in b else v for k, v in a.items()}


def tree_sub(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> Params:
    """``a - b`` key-wise over the keys of ``a``."""
    return {k: v - b[k] for k, v in a.items()}


def tree_scale(a: Mapping[str, torch.Tensor], s: float) -> Params:
    """``s * a`` key-wise."""
    return {k: v * s for k, v in a.items()}


def tree_zeros_like(a: Mapping[str, torch.Tensor]) -> Params:
    """Zeros shaped like each tensor of ``a``."""
    return {k: torch.zeros_like(v) for k, v in a.items()}


def tree_all_finite(a: Mapping[str, torch.Tensor]) -> bool:
    """True when every element of every tensor is finite (one host sync)."""
    if not a:
        return True
    flags = torch.stack([torch.isfinite(v).all() for v in a.values()])
    return bool(flags.all())


def tree_to(a: Mapping[str, torch.Tensor], device: torch.device | str) -> Params:
    """Move every tensor to ``device`` (a copy when the device differs)."""
    return {k: v.to(device) for k, v in a.items()}


def tree_equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """Bitwise equality of two parameter dicts (same keys, ``torch.equal`` per tensor)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].to(a[k].device)) for k in a)


class _Apply(nn.Module):
    """Holds a model as child ``m`` and runs ``fn(m, *args)``; the target of functional_call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:  # noqa: D401
        return fn(self.m, *args)


class FunctionalModel:
    """Run functions of a module with parameters taken from a dict.

    ``fm(params, fn, *args)`` evaluates ``fn(model, *args)`` with ``model``'s parameters named in
    ``params`` replaced by those tensors (the others, e.g. frozen extractors, stay as they are).
    It is pure: the module is unchanged afterwards, and it composes with ``torch.func.grad``
    and ``vmap`` (batched parameters work).

    Args:
        model: the module; put it in ``eval()`` mode if it has dropout (vmap refuses randomness).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._wrapper = _Apply(model)
        self._prefixed: dict[str, str] = {n: "m." + n for n, _ in model.named_parameters()}
        # tie_weights walks the whole module on every call; only needed when parameters are shared
        n_all = sum(1 for _ in model.named_parameters(remove_duplicate=False))
        n_all += sum(1 for _ in model.named_buffers(remove_duplicate=False))
        n_unique = len(self._prefixed) + sum(1 for _ in model.named_buffers())
        self._tie = n_all != n_unique
        # Shared parameters. A module reachable under two paths (one encoder body shared by two
        # encoders) needs its tensor set once: both paths see the same module. Swapping it under
        # both names (what tie_weights does) saved the already-swapped tensor as the "original"
        # and left a batched tensor in the model after vmap. A Parameter object registered in two
        # *different* modules is passed under each of its names.
        self._aliases: dict[str, list[str]] = {}
        if self._tie:
            first: dict[int, tuple[str, int]] = {}
            for n, p in model.named_parameters(remove_duplicate=False):
                owner = id(model.get_submodule(n.rpartition(".")[0]))
                canon, canon_owner = first.setdefault(id(p), (n, owner))
                if canon != n and owner != canon_owner:
                    self._aliases.setdefault(canon, []).append("m." + n)

    def __call__(self, params: Mapping[str, torch.Tensor], fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(model_with_params, *args)``; ``params`` maps parameter names to tensors."""
        pref = self._prefixed
        swapped = {pref.get(k, "m." + k): v for k, v in params.items()}
        for k, v in params.items():
            for alias in self._aliases.get(k, ()):
                swapped[alias] = v
        return functional_call(self._wrapper, swapped, (fn, *args), strict=False, tie_weights=False)

    def names(self) -> list[str]:
        """All parameter names of the module (trainable or not)."""
        return list(self._prefixed)


def param_count(params: Iterable[torch.Tensor]) -> int:
    """Total number of elements."""
    return int(sum(p.numel() for p in params))
