"""Inner loops: S steps of SGD or Adam from the meta-parameters.

A task's inner loop differentiates ``loss_fn(params, batch) -> scalar`` with
``torch.func.grad_and_value`` (the model runs through ``functional_call``). Three entry points:

* :func:`run_batched` — the tasks of a meta-batch (one family) together: every step is one
  ``vmap`` over the tasks of the gradient function, with the parameters entering unbatched
  (``in_dims=None``) at the first step; the update is applied to all tasks at once, in place, by
  :class:`InnerOptimizer` (fused Adam / ``_foreach`` SGD) on the loop's own ``[T, ...]`` copies;
* :func:`run_sequential` — the reference: a Python loop over the tasks running the same steps
  without ``vmap``;
* :func:`adapt` — one task as a pure function (no in-place updates), so it can itself be
  vmapped inside larger per-task functions (meta-test fine-tuning does this);
* :func:`run_higher` — the optional ``higher`` backend (extra ``[higher]``): a Python loop over
  the tasks whose updates are made by ``higher``'s differentiable optimisers
  (``DifferentiableSGD`` / ``DifferentiableAdam``) with plain autograd gradients.

Adam's state starts from zero for every task (standard for Reptile inner loops). All three give
the same parameters up to floating-point rounding (tests compare them with ``torch.optim``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Collection, Mapping

import torch
from torch.func import grad_and_value, vmap

from croma.meta.functional import Params

__all__ = [
    "InnerConfig",
    "INNER_OPTIMIZERS",
    "adapt",
    "run_batched",
    "run_sequential",
    "run_inner",
    "run_higher",
    "import_higher",
    "INNER_LOOPS",
    "sgd_step",
    "adam_init",
    "adam_step",
]

INNER_OPTIMIZERS = ("sgd", "adam")
#: inner-loop backends (:func:`run_inner`); ``higher`` needs the optional package of that name
INNER_LOOPS = ("batched", "sequential", "higher")

LossFn = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class InnerConfig:
    """An inner loop: ``steps`` updates of ``optimizer`` (``sgd`` | ``adam``) at rate ``lr``.

    ``compile``: :func:`run_batched` runs its vmapped gradient step through ``torch.compile``
    (inductor; compiled once per input shape and cached by PyTorch; the first call of each shape
    pays the compile time, tens of seconds on CPU).
    """

    steps: int = 5
    lr: float = 1e-3
    optimizer: str = "adam"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    compile: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"inner optimizer must be one of {', '.join(INNER_OPTIMIZERS)} (got {self.optimizer!r})")
        if self.steps < 0:
            raise ValueError(f"inner steps must be >= 0 (got {self.steps})")
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ValueError(f"inner lr must be a finite number >= 0 (got {self.lr})")


def sgd_step(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], lr: float) -> Params:
    """``p - lr * g`` for every parameter."""
    return {k: torch.add(p, grads[k], alpha=-lr) for k, p in params.items()}


def adam_init(params: Mapping[str, torch.Tensor]) -> tuple[Params, Params]:
    """Zero first and second moments shaped like ``params``."""
    return ({k: torch.zeros_like(p) for k, p in params.items()}, {k: torch.zeros_like(p) for k, p in params.items()})


def adam_step(
    params: Mapping[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor],
    m: Mapping[str, torch.Tensor],
    v: Mapping[str, torch.Tensor],
    t: int,
    cfg: InnerConfig,
) -> tuple[Params, Params, Params]:
    """One Adam update (Kingma & Ba, bias-corrected) at step ``t`` (1-based).

    ``m <- b1 m + (1-b1) g``; ``v <- b2 v + (1-b2) g^2``;
    ``p <- p - lr * (m / c1) / (sqrt(v / c2) + eps)`` with ``c_i = 1 - b_i^t``, written with fused
    ops (``lerp``, ``addcmul``, ``addcdiv``) so each parameter costs few passes over memory.

    Returns:
        ``(new_params, new_m, new_v)``.
    """
    b1, b2 = cfg.beta1, cfg.beta2
    c1 = 1.0 - b1**t
    sqrt_c2 = math.sqrt(1.0 - b2**t)
    # p - lr/c1 * m / (sqrt(v)/sqrt_c2 + eps) == p - (lr*sqrt_c2/c1) * m / (sqrt(v) + eps*sqrt_c2)
    step = cfg.lr * sqrt_c2 / c1
    eps = cfg.eps * sqrt_c2
    new_p, new_m, new_v = {}, {}, {}
    for k, p in params.items():
        g = grads[k]
        if t == 1:  # moments start at zero: m = (1-b1) g, v = (1-b2) g^2
            mk = g * (1.0 - b1)
            vk = (g * g).mul_(1.0 - b2)
        else:
            mk = torch.lerp(m[k], g, 1.0 - b1)
            vk = torch.addcmul(v[k] * b2, g, g, value=1.0 - b2)
        new_m[k], new_v[k] = mk, vk
        new_p[k] = torch.addcdiv(p, mk, vk.sqrt().add_(eps), value=-step)
    return new_p, new_m, new_v


def adapt(
    loss_fn: LossFn,
    trainable: Mapping[str, torch.Tensor],
    constant: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    cfg: InnerConfig,
) -> tuple[Params, torch.Tensor]:
    """Run one task's inner loop.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar`` where ``params`` holds every parameter
            the loss needs (``{**constant, **trainable}``).
        trainable: parameters updated by the loop (``{name: tensor}``).
        constant: parameters held fixed (may be empty).
        batch: the task's tensors (no task dimension here).
        cfg: steps, learning rate, optimiser.

    Returns:
        ``(adapted, losses)``: the adapted trainable parameters and ``losses [steps]``, the loss
        before each update (detached).
    """
    const = dict(constant)

    def objective(p: Params) -> torch.Tensor:
        return loss_fn({**const, **p}, batch)

    step_fn = grad_and_value(objective)
    params = dict(trainable)
    losses = []
    m: Params = {}
    v: Params = {}
    for t in range(1, cfg.steps + 1):
        grads, loss = step_fn(params)
        losses.append(loss.detach())
        if cfg.optimizer == "sgd":
            params = sgd_step(params, grads, cfg.lr)
        else:
            params, m, v = adam_step(params, grads, m, v, t, cfg)
    if losses:
        loss_vec = torch.stack(losses)
    else:
        ref = next(iter(params.values()))
        loss_vec = torch.zeros(0, dtype=ref.dtype, device=ref.device)
    return params, loss_vec


class InnerOptimizer:
    """In-place SGD / Adam over a list of parameter tensors the loop owns (outside any transform).

    Used by :func:`run_batched` and :func:`run_sequential`: their parameters are private copies
    (``[T, *shape]`` for a batch of tasks), so updating them in place is safe and avoids
    allocating every intermediate of the update — on CPU, fresh multi-megabyte tensors cost far
    more than the arithmetic. Adam uses PyTorch's fused kernel when available (one pass over
    memory), else ``torch._foreach_*`` ops; both implement the same bias-corrected update as
    :func:`adam_step`.
    """

    def __init__(self, params: Mapping[str, torch.Tensor], cfg: InnerConfig) -> None:
        self.cfg = cfg
        self.names = list(params)
        self.params = [params[k] for k in self.names]
        self.t = 0
        if cfg.optimizer == "adam":
            self.m = [torch.zeros_like(p) for p in self.params]
            self.v = [torch.zeros_like(p) for p in self.params]
            self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def step(self, grads: Mapping[str, torch.Tensor]) -> None:
        """Apply one update with ``grads`` (same names and shapes as the parameters)."""
        g = [grads[k].contiguous() for k in self.names]
        cfg = self.cfg
        self.t += 1
        if cfg.optimizer == "sgd":
            torch._foreach_add_(self.params, g, alpha=-cfg.lr)
            return
        for st in self.steps:  # the fused kernel reads the (already incremented) step count
            st.add_(1.0)
        fused = getattr(torch, "_fused_adam_", None)
        if fused is not None and all(p.dtype in (torch.float32, torch.float64) for p in self.params):
            try:
                fused(
                    self.params, g, self.m, self.v, [], self.steps, lr=cfg.lr, beta1=cfg.beta1, beta2=cfg.beta2,
                    weight_decay=0.0, eps=cfg.eps, amsgrad=False, maximize=False,
                )
                return
            except (RuntimeError, NotImplementedError):  # pragma: no cover - device/dtype without a fused kernel
                pass
        b1, b2, t = cfg.beta1, cfg.beta2, self.t
        sqrt_c2 = math.sqrt(1.0 - b2**t)
        torch._foreach_lerp_(self.m, g, 1.0 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, g, g, value=1.0 - b2)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_add_(denom, cfg.eps * sqrt_c2)
        torch._foreach_addcdiv_(self.params, self.m, denom, value=-cfg.lr * sqrt_c2 / (1.0 - b1**t))


def _grad_fn(loss_fn: LossFn):
    def objective(p: Params, c: Params, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn({**c, **p}, b)

    return grad_and_value(objective)


def run_batched(
    loss_fn: LossFn,
    trainable: Mapping[str, torch.Tensor],
    constant: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    cfg: InnerConfig,
    *,
    batched: Collection[str] = (),
) -> tuple[Params, torch.Tensor]:
    """Inner loops of ``T`` tasks as one batched computation per step.

    Each step is one ``vmap`` over the tasks of ``grad_and_value(loss)``; at the first step the
    parameters enter unbatched (``in_dims=None``: every task starts from the same ``theta``, so
    the encoders run as one large matrix product over all tasks' rows), afterwards as ``[T, ...]``.
    The update is applied to all tasks at once by :class:`InnerOptimizer`.

    Args:
        trainable, constant: unbatched parameters (shared by all tasks at entry; not modified).
        batch: task tensors with a leading task dimension ``[T, ...]``.
        batched: names of ``trainable`` that already carry the task dimension ``[T, *shape]``
            (each task starts from its own value, e.g. a per-task classifier head).

    Returns:
        ``(adapted, losses)``: adapted parameters ``[T, *shape]`` per name and ``losses [T, steps]``
        (the loss before each update).
    """
    n = _num_tasks(batch)
    gv = _grad_fn(loss_fn)
    # randomness="different": objectives that draw noise (from a generator they are given) get
    # independent noise per task; deterministic objectives are unaffected
    per_task = set(batched)
    first_dims = {k: (0 if k in per_task else None) for k in trainable}
    first = vmap(gv, in_dims=(first_dims, None, 0), randomness="different")
    rest = vmap(gv, in_dims=(0, None, 0), randomness="different")
    if cfg.compile:
        first, rest = _compiled(first), _compiled(rest)
    params = {
        k: (v.detach().clone() if k in per_task else v.detach().unsqueeze(0).expand(n, *v.shape).clone())
        for k, v in trainable.items()
    }
    opt = InnerOptimizer(params, cfg)
    const, b = dict(constant), dict(batch)
    losses = []
    with torch.no_grad():  # grad_and_value differentiates inside; nothing outside needs a graph
        for s in range(cfg.steps):
            grads, loss = first(dict(trainable), const, b) if s == 0 else rest(params, const, b)
            opt.step(grads)
            losses.append(loss)
    ref = next(iter(trainable.values()))
    loss_mat = torch.stack(losses, dim=1) if losses else torch.zeros(n, 0, dtype=ref.dtype, device=ref.device)
    return params, loss_mat


_COMPILE_BACKEND = "inductor"  # tests use "eager" (graph capture without code generation)


def _compiled(fn):
    """``torch.compile(fn)`` with static shapes (PyTorch caches the compiled code per shape)."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)  # families x chunk shapes
    return torch.compile(fn, dynamic=False, backend=_COMPILE_BACKEND)


def run_sequential(
    loss_fn: LossFn,
    trainable: Mapping[str, torch.Tensor],
    constant: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    cfg: InnerConfig,
) -> tuple[Params, torch.Tensor]:
    """The reference: a Python loop over tasks, the same inner loop without ``vmap``.

    Same inputs and outputs as :func:`run_batched`.
    """
    n = _num_tasks(batch)
    gv = _grad_fn(loss_fn)
    const = dict(constant)
    outs, losses = [], []
    with torch.no_grad():
        for i in range(n):
            b = {k: v[i] for k, v in batch.items()}
            params = {k: v.detach().clone() for k, v in trainable.items()}
            opt = InnerOptimizer(params, cfg)
            task_losses = []
            for _ in range(cfg.steps):
                grads, loss = gv(params, const, b)
                opt.step(grads)
                task_losses.append(loss)
            outs.append(params)
            ref = next(iter(trainable.values()))
            losses.append(torch.stack(task_losses) if task_losses else torch.zeros(0, dtype=ref.dtype, device=ref.device))
    if n == 0:
        return {k: v.unsqueeze(0)[:0] for k, v in trainable.items()}, torch.zeros(0, cfg.steps)
    return {k: torch.stack([o[k] for o in outs]) for k in trainable}, torch.stack(losses)


def run_higher(
    loss_fn: LossFn,
    trainable: Mapping[str, torch.Tensor],
    constant: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    cfg: InnerConfig,
) -> tuple[Params, torch.Tensor]:
    """Inner loops run by ``higher`` (0.2.x): one task at a time, plain autograd.

    For every task a ``torch.optim.SGD`` / ``torch.optim.Adam`` with the loop's settings is
    turned into ``higher``'s differentiable optimiser (``higher.optim.get_diff_optim``, with
    ``track_higher_grads=False``: Reptile is first-order); each step computes the task loss with
    ``loss_fn`` and calls ``diffopt.step(loss, params=...)``. ``higher``'s Adam places ``eps``
    before the bias correction; the step-``t`` override ``eps * sqrt(1 - beta2^t)`` makes it the
    same update as ``torch.optim.Adam``. Same inputs and outputs as :func:`run_batched`; the
    adapted parameters equal the ``torch.func`` paths' up to rounding.

    Raises:
        CromaError: ``higher`` is not installed (names the extra that installs it).
    """
    higher = import_higher()
    n = _num_tasks(batch)
    names = list(trainable)
    const = dict(constant)
    outs, losses = [], []
    ref = next(iter(trainable.values()))
    with torch.enable_grad():
        for i in range(n):
            b = {k: v[i] for k, v in batch.items()}
            params = [trainable[k].detach().clone().requires_grad_() for k in names]
            if cfg.optimizer == "adam":
                opt = torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
            else:
                opt = torch.optim.SGD(params, lr=cfg.lr)
            diffopt = higher.optim.get_diff_optim(opt, params, track_higher_grads=False)
            task_losses = []
            for t in range(1, cfg.steps + 1):
                loss = loss_fn({**const, **dict(zip(names, params))}, b)
                task_losses.append(loss.detach())
                # higher 0.2.1's Adam adds eps to sqrt(v) *before* the bias correction (the update of
                # PyTorch < 1.x); eps * sqrt(1 - b2^t) at step t gives torch.optim.Adam's update exactly
                override = {"eps": [cfg.eps * math.sqrt(1.0 - cfg.beta2**t)]} if cfg.optimizer == "adam" else None
                params = list(diffopt.step(loss, params=params, override=override))
            outs.append({k: p.detach() for k, p in zip(names, params)})
            losses.append(torch.stack(task_losses) if task_losses else torch.zeros(0, dtype=ref.dtype, device=ref.device))
    if n == 0:
        return {k: v.unsqueeze(0)[:0] for k, v in trainable.items()}, torch.zeros(0, cfg.steps)
    return {k: torch.stack([o[k] for o in outs]) for k in names}, torch.stack(losses)


def import_higher():
    """The ``higher`` module, or a :class:`croma.errors.CromaError` naming the extra that installs it."""
    try:
        import higher
        import higher.optim  # noqa: F401 - the differentiable optimisers
    except ImportError as exc:
        from croma.errors import CromaError
        from episodes.extras import install_hint

        raise CromaError(
            f"--inner-loop higher needs the optional package 'higher', which is not installed: {install_hint('higher')}"
        ) from exc
    return higher


def run_inner(
    mode: str,
    loss_fn: LossFn,
    trainable: Mapping[str, torch.Tensor],
    constant: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    cfg: InnerConfig,
) -> tuple[Params, torch.Tensor]:
    """Dispatch to :func:`run_batched` (``mode="batched"``), :func:`run_sequential` or :func:`run_higher`."""
    if mode == "batched":
        return run_batched(loss_fn, trainable, constant, batch, cfg)
    if mode == "sequential":
        return run_sequential(loss_fn, trainable, constant, batch, cfg)
    if mode == "higher":
        return run_higher(loss_fn, trainable, constant, batch, cfg)
    raise ValueError(f"inner loop must be one of {', '.join(INNER_LOOPS)} (got {mode!r})")


def _num_tasks(batch: Mapping[str, torch.Tensor]) -> int:
    sizes = {int(v.shape[0]) for v in batch.values()}
    if len(sizes) != 1:
        raise ValueError(f"task batch tensors disagree on the number of tasks: {sorted(sizes)}")
    return sizes.pop()
