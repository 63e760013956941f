"""Inner loops: S steps of SGD or Adam from the meta-parameters.

One per-task function, :func:`task_step` — ``grad_and_value`` of ``loss_fn(params, batch) ->
scalar`` for one task (the model runs through ``functional_call``) — and one optimiser,
:class:`InnerOptimizer` (in place: PyTorch's fused Adam, ``_foreach`` SGD), drive every path
through one loop skeleton (:func:`_inner_loop`):

* :func:`run_batched` — the tasks of a meta-batch (one family) together: every step is one
  ``vmap`` over the tasks of :func:`task_step`, with the parameters entering unbatched
  (``in_dims=None``) at the first step; the update is applied to all tasks at once on the loop's
  own ``[T, ...]`` copies;
* :func:`run_sequential` — the reference: a Python loop over the tasks calling the *same*
  :func:`task_step` without ``vmap`` (via :func:`adapt`), so ``batched == sequential`` tests ``vmap``;
* :func:`adapt` — one task (no task dimension); its inputs are not modified;
* :func:`run_higher` — the optional ``higher`` backend (extra ``[higher]``): the same per-task loop
  (:func:`_task_by_task`) with updates made by ``higher``'s differentiable optimisers
  (``DifferentiableSGD`` / ``DifferentiableAdam``) from plain autograd gradients.

Adam's state starts from zero for every task (standard for Reptile inner loops). All paths give
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
    "inner_loop_text",
    "INNER_OPTIMIZERS",
    "InnerOptimizer",
    "task_step",
    "adapt",
    "run_batched",
    "run_sequential",
    "run_inner",
    "run_higher",
    "import_higher",
    "INNER_LOOPS",
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


class InnerOptimizer:
    """The inner optimiser: in-place SGD / Adam over parameter tensors the loop owns.

    Every path's parameters are private copies (``[T, *shape]`` for a batch of tasks), so
    updating them in place is safe and avoids allocating every intermediate of the update — on
    CPU, fresh multi-megabyte tensors cost far more than the arithmetic. Adam (Kingma & Ba,
    bias-corrected, ``torch.optim.Adam``'s update) uses PyTorch's fused kernel when available
    (one pass over memory), else ``torch._foreach_*`` ops.
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
        # m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2; p <- p - lr (m/c1) / (sqrt(v/c2) + eps), c_i = 1 - b_i^t,
        # written as p - (lr sqrt(c2)/c1) m / (sqrt(v) + eps sqrt(c2))
        b1, b2, t = cfg.beta1, cfg.beta2, self.t
        sqrt_c2 = math.sqrt(1.0 - b2**t)
        torch._foreach_lerp_(self.m, g, 1.0 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, g, g, value=1.0 - b2)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_add_(denom, cfg.eps * sqrt_c2)
        torch._foreach_addcdiv_(self.params, self.m, denom, value=-cfg.lr * sqrt_c2 / (1.0 - b1**t))


def task_step(loss_fn: LossFn):
    """The per-task function ``(trainable, constant, batch) -> (grads, loss)`` of one task.

    ``loss_fn(params, batch) -> scalar`` receives ``{**constant, **trainable}``. :func:`run_batched`
    vmaps this function over tasks; :func:`adapt` (and so :func:`run_sequential`) calls it as is.
    """

    def objective(p: Params, c: Params, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn({**c, **p}, b)

    return grad_and_value(objective)


def _inner_loop(params: Params, cfg: InnerConfig, grad_at: Callable[[int], tuple[Params, torch.Tensor]]) -> list[torch.Tensor]:
    """The loop skeleton: ``cfg.steps`` times ``grads, loss = grad_at(step)``, then update ``params``
    in place with :class:`InnerOptimizer`. Returns the losses before each update."""
    opt = InnerOptimizer(params, cfg)
    losses = []
    with torch.no_grad():  # grad_and_value differentiates inside; nothing outside needs a graph
        for s in range(cfg.steps):
            grads, loss = grad_at(s)
            opt.step(grads)
            losses.append(loss)
    return losses


def adapt(
    loss_fn: LossFn,
    trainable: Mapping[str, torch.Tensor],
    constant: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    cfg: InnerConfig,
) -> tuple[Params, torch.Tensor]:
    """Run one task's inner loop (the body of :func:`run_sequential`).

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar`` where ``params`` holds every parameter
            the loss needs (``{**constant, **trainable}``).
        trainable: parameters updated by the loop (``{name: tensor}``; copied, not modified).
        constant: parameters held fixed (may be empty).
        batch: the task's tensors (no task dimension here).
        cfg: steps, learning rate, optimiser.

    Returns:
        ``(adapted, losses)``: the adapted trainable parameters (detached) and ``losses [steps]``,
        the loss before each update (detached).
    """
    step, const, b = task_step(loss_fn), dict(constant), dict(batch)
    params = {k: v.detach().clone() for k, v in trainable.items()}
    losses = _inner_loop(params, cfg, lambda s: step(params, const, b))
    return params, _stack(losses, 0, trainable)


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

    Each step is one ``vmap`` over the tasks of :func:`task_step`; at the first step the
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
    gv = task_step(loss_fn)
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
    const, b, theta = dict(constant), dict(batch), dict(trainable)
    losses = _inner_loop(params, cfg, lambda s: first(theta, const, b) if s == 0 else rest(params, const, b))
    return params, _stack(losses, 1, trainable, n)


_COMPILE_BACKEND = "inductor"  # tests use "eager" (graph capture without code generation)


def _compiled(fn):
    """``torch.compile(fn)`` with static shapes (PyTorch caches the compiled code per shape).

    A backend that cannot build code (on CPU inductor needs a C++ compiler) raises
    :class:`croma.errors.CromaError` naming ``--compile-inner`` instead of PyTorch's traceback.
    """
    import logging
    import warnings

    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)  # families x chunk shapes
    # a CPU-only machine: torch.utils.cpp_extension logs "No CUDA runtime is found" at every compile
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # inductor's own use of a deprecated helper (torch 2.14) would print a FutureWarning per compile
    warnings.filterwarnings("ignore", message=r".*_prims_common\.check.*", category=FutureWarning)
    compiled = torch.compile(fn, dynamic=False, backend=_COMPILE_BACKEND)

    def run(*args):
        try:
            return compiled(*args)
        except torch._dynamo.exc.BackendCompilerFailed as exc:
            from croma.errors import CromaError

            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise CromaError(
                f"--compile-inner: torch.compile could not build the inner step ({first}); on CPU it needs a "
                "working C++ compiler (g++ or clang); run without --compile-inner (or with --no-compile-inner "
                "where croma train chose it)"
            ) from None

    return run


def run_sequential(
    loss_fn: LossFn,
    trainable: Mapping[str, torch.Tensor],
    constant: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    cfg: InnerConfig,
) -> tuple[Params, torch.Tensor]:
    """The reference: a Python loop over tasks running :func:`adapt` — the same per-task function
    and optimiser as :func:`run_batched`, without ``vmap``. Same inputs and outputs as :func:`run_batched`.
    """
    return _task_by_task(lambda b: adapt(loss_fn, trainable, constant, b, cfg), trainable, batch, cfg)


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
    names = list(trainable)
    const = dict(constant)

    @torch.enable_grad()
    def one_task(b: Mapping[str, torch.Tensor]) -> tuple[Params, torch.Tensor]:
        params = [trainable[k].detach().clone().requires_grad_() for k in names]
        if cfg.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        else:
            opt = torch.optim.SGD(params, lr=cfg.lr)
        diffopt = higher.optim.get_diff_optim(opt, params, track_higher_grads=False)
        losses = []
        for t in range(1, cfg.steps + 1):
            loss = loss_fn({**const, **dict(zip(names, params))}, b)
            losses.append(loss.detach())
            # higher 0.2.1's Adam adds eps to sqrt(v) *before* the bias correction (the update of
            # PyTorch < 1.x); eps * sqrt(1 - b2^t) at step t gives torch.optim.Adam's update exactly
            override = {"eps": [cfg.eps * math.sqrt(1.0 - cfg.beta2**t)]} if cfg.optimizer == "adam" else None
            params = list(diffopt.step(loss, params=params, override=override))
        return {k: p.detach() for k, p in zip(names, params)}, _stack(losses, 0, trainable)

    return _task_by_task(one_task, trainable, batch, cfg)


def _task_by_task(
    run_one: Callable[[Mapping[str, torch.Tensor]], tuple[Params, torch.Tensor]],
    trainable: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    cfg: InnerConfig,
) -> tuple[Params, torch.Tensor]:
    """``run_one`` on every task of ``batch [T, ...]`` in a Python loop, results stacked as :func:`run_batched`'s."""
    n = _num_tasks(batch)
    if n == 0:
        return {k: v.unsqueeze(0)[:0] for k, v in trainable.items()}, torch.zeros(0, cfg.steps)
    outs, losses = zip(*(run_one({k: v[i] for k, v in batch.items()}) for i in range(n)))
    return {k: torch.stack([o[k] for o in outs]) for k in trainable}, torch.stack(losses)


def _stack(losses: list[torch.Tensor], dim: int, like: Mapping[str, torch.Tensor], n: int | None = None) -> torch.Tensor:
    """Per-step losses stacked along ``dim`` (``[steps]`` or ``[T, steps]``); empty when there were no steps."""
    if losses:
        return torch.stack(losses, dim=dim)
    ref = next(iter(like.values()))
    return torch.zeros(*(() if n is None else (n,)), 0, dtype=ref.dtype, device=ref.device)


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


def inner_loop_text(cfg, chosen: str | None = None) -> str:
    """Which inner-loop path a :class:`croma.config.TrainConfig` takes, in one phrase (``croma train``
    and ``croma benchmark`` print it before training); ``chosen``: why ``croma train`` compiled it
    when no flag asked (``croma.cli.train_steps.auto_compile_reason``)."""
    if cfg.inner_loop == "sequential":
        return "sequential (one task at a time, torch.func), eager"
    if cfg.inner_loop == "higher":
        return "higher (one task at a time, differentiable optimisers), eager"
    how = ("eager (--compile-inner compiles it)" if not cfg.compile_inner
           else f"compiled (torch.compile, chosen by croma train: {chosen}; --no-compile-inner keeps it eager)" if chosen
           else "compiled (torch.compile, --compile-inner)")
    return f"batched (torch.func vmap over up to {cfg.task_chunk} tasks per call), {how}"
