"""Ordinary (non-meta) training used by several baselines.

One loop, several optional terms, each a mini-batch per step:

* ``align_weight * objective(e_s(x_s), e_t(x_t))`` on alignment pairs (the chosen objective);
  on a benchmark with more than two modalities holding alignment rows (a manifest's extra
  modalities, kept unless ``--no-extra-modalities``), one ``align_multi`` task per step instead
  (:class:`croma.meta.multimodal.AlignMultiFamily`, the Reptile families' own code: the same
  tuples, ``pcmc`` / ``pcmr`` over all modalities at once with absent items masked, any other
  objective averaged over the modality pairs, each on items holding both), so the extra
  modalities' encoders train too; with two modalities the pairs above, exactly as before;
* cross-entropy of a **source** classifier over all ``source_train`` classes on
  classification rows (a separate head: the shared N-way classifier is for episodes);
* cross-entropy of a **target** classifier over meta-train target classes (methods that
  declare they use target labels);
* a domain-confusion term (gradient reversal against a modality discriminator on the
  embeddings of source and unlabeled target items; the reversal strength follows the DANN
  ramp ``w * (2 / (1 + exp(-10 p)) - 1)`` over training progress ``p``).

Adam on all trainable parameters (on CPU :class:`PlainAdam`: ``torch.optim.Adam``'s update
without its per-step overhead) for a budget of optimiser steps (one step: one mini-batch per
term), seeded mini-batches (batch ``b`` of the run is a pure function of ``(seed, b)``); the
global RNG is not used. Meta-val is checked before training and ``val_checks`` times during it;
the parameters with the best meta-val accuracy are kept (the start included), as for Reptile.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from croma.baselines.common import Budget, MethodContext, meta_val_score
from croma.errors import NonFiniteLossError, ordinary_non_finite_advice
from croma.meta.multimodal import AlignMultiFamily, uses_multi_alignment
from croma.meta.tasks import derive_seed, model_inputs
from episodes.samplers import AlignmentTaskSampler, episode_generator


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-scale`` backward (domain confusion)."""
    return _GradReverse.apply(x, scale)


class PlainAdam:
    """``torch.optim.Adam(params, lr)``'s update on CPU (its single-tensor path, the CPU default:
    betas (0.9, 0.999), eps 1e-8, no weight decay), op for op, so bitwise the same parameters
    (``tests/test_train_speed_ordinary.py`` checks it), without ``torch.optim``'s per-step
    wrappers (profiling hooks, ``_init_group``, a step tensor and an ``.item()`` per parameter):
    about 2 ms less per step on the quick preset's models. A parameter without a gradient is
    skipped and its step count stays, as in ``torch.optim``. Use :func:`make_adam`."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, self.eps = float(lr), float(eps)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.state: dict[int, list] = {}  # index -> [step, exp_avg, exp_avg_sq]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2, lr, eps = self.beta1, self.beta2, self.lr, self.eps
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            st = self.state.get(i)
            if st is None:
                st = self.state[i] = [0, torch.zeros_like(p), torch.zeros_like(p)]
            st[0] += 1
            step, exp_avg, exp_avg_sq = float(st[0]), st[1], st[2]
            exp_avg.lerp_(grad, 1 - b1)
            exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            step_size = lr / (1 - b1**step)
            denom = exp_avg_sq.sqrt().div_((1 - b2**step) ** 0.5).add_(eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


def make_adam(params, lr: float, *, fused: bool = False):
    """Ordinary training's Adam: :class:`PlainAdam` when every parameter is a dense float CPU tensor,
    else ``torch.optim.Adam`` (its default implementation for the device); the same update either way.

    ``fused``: ``torch.optim.Adam(fused=True)`` instead (one kernel per parameter: about half of the
    optimiser's time on the quick preset, but other rounding, ~1e-7 per step, so other numbers;
    opt-in, the ``fused_adam`` knob)."""
    params = list(params)
    if fused:
        return torch.optim.Adam(params, lr=lr, fused=True)
    if all(p.device.type == "cpu" and p.dtype.is_floating_point and p.layout == torch.strided for p in params):
        return PlainAdam(params, lr)
    return torch.optim.Adam(params, lr=lr)


class _RowBatches:
    """Seeded mini-batches of rows (with their labels remapped to 0..C-1)."""

    def __init__(self, rows: torch.Tensor, labels: torch.Tensor | None, batch: int, seed: int, stream: str) -> None:
        self.rows = rows
        self.batch = min(int(batch), int(rows.numel()))
        self.seed, self.stream = seed, stream
        if labels is not None:
            classes = sorted(set(labels.tolist()))
            index = {c: i for i, c in enumerate(classes)}
            self.labels = torch.tensor([index[int(c)] for c in labels.tolist()], dtype=torch.long)
            self.num_classes = len(classes)
        else:
            self.labels, self.num_classes = None, 0

    def get(self, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = episode_generator(self.seed, b, self.stream)
        pick = torch.randperm(self.rows.numel(), generator=g)[: self.batch]
        return self.rows[pick], (None if self.labels is None else self.labels[pick])


class MultiAlignTerm:
    """The alignment term over every modality (more than two): task ``step`` of an
    :class:`~croma.meta.multimodal.AlignMultiFamily` per optimiser step.

    Args:
        bench, inputs, objective, model: as for the family (``inputs`` of source and target;
            the extra modalities' come from ``bench`` and ``model.preprocess``).
        batch_size: tuples per step (``align_batch``). seed: the term's seed.
    """

    def __init__(self, bench, inputs, objective: nn.Module, *, batch_size: int, seed: int, model: nn.Module) -> None:
        self.family = AlignMultiFamily(bench, inputs, loss_module=objective, batch_size=batch_size, seed=seed, model=model)
        self.seed = int(seed)
        self.items = self.family.items_per_task()  # items one step passes through encoders

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """Task ``step``: ``x_<modality> [B, *shape]`` + ``present [B, M]``, or ``p<k>_a/b [B_k, *shape]``."""
        return {k: v[0] for k, v in self.family.sample([step]).items()}

    def loss(self, model: nn.Module, step: int) -> torch.Tensor:
        """Scalar objective of task ``step`` (``cmcr`` noise seeded by ``(seed, step)``)."""
        self.family.begin(derive_seed(self.seed, "begin", step))
        return self.family.loss(model, self.batch(step))


def ordinary_train(
    ctx: MethodContext,
    model: nn.Module,
    *,
    budget: Budget,
    align_weight: float = 1.0,
    source_cls: bool = True,
    target_cls: bool = False,
    confusion_weight: float = 0.0,
    bench=None,
    train_filter=None,
    all_modalities: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place within ``budget`` (optimiser steps, or seconds for exploration).

    Args:
        ctx: method context (``ctx.knob``: ``ordinary_lr`` (default 1e-3), ``ordinary_batch`` (64),
            ``val_checks`` (6), ``fused_adam`` (False: see :func:`make_adam`); ``select=False`` in
            ``knobs`` disables meta-val selection).
        model: a :class:`croma.model.CrossModalModel`; ends holding the selected parameters.
        budget: :class:`croma.baselines.common.Budget`.
        align_weight: weight of the alignment objective (0 disables it).
        source_cls / target_cls: add the source / target classification terms.
        confusion_weight: weight of the domain-confusion term (0 disables it).
        bench: benchmark (default ``ctx.bench``; a noisy-label copy for target labels).
        train_filter: optional ``name -> bool`` selecting which parameters train.
        all_modalities: align every modality when the benchmark has more than two holding
            alignment rows (:class:`MultiAlignTerm`; ``model`` needs their encoders); False:
            source and target only.

    Returns:
        ``{"optimizer_steps", "examples", "seconds", "losses": {term: last running mean},
        "start_val", "best_val", "best_step"}``.

    Raises:
        NonFiniteLossError: a loss became NaN/inf (names the step).
    """
    bench = bench if bench is not None else ctx.bench
    cfg = ctx.method_train()  # this method's own objective (loss, loss_hp) when tuned
    device = next(model.parameters()).device
    inputs = model_inputs(model, bench, device)
    src, tgt = bench.source, bench.target
    batch = int(ctx.knob("ordinary_batch", 64))
    seed = derive_seed(cfg.seed, "ordinary")
    terms: dict[str, Any] = {}
    if align_weight > 0:
        from croma.losses import get_loss

        if all_modalities and uses_multi_alignment(bench):
            terms["align"] = MultiAlignTerm(bench, inputs, get_loss(cfg.loss, **dict(cfg.loss_hp)).to(device),
                                            batch_size=cfg.align_batch, seed=derive_seed(seed, "align"), model=model)
        else:
            terms["align"] = (
                AlignmentTaskSampler(
                    bench.align_mode, batch_size=cfg.align_batch, seed=derive_seed(seed, "align"), pairs=bench.pairs,
                    source_rows=bench.align_source_rows, target_rows=bench.align_target_rows,
                    source_clusters=bench.data[src].clusters, target_clusters=bench.data[tgt].clusters,
                ),
                get_loss(cfg.loss, **dict(cfg.loss_hp)).to(device),
            )
    heads = nn.ModuleDict()
    if source_cls:
        rows = bench.classify_source_rows
        terms["source_cls"] = _RowBatches(rows, bench.data[src].labels[rows], batch, seed, "source_cls")
        heads["source"] = nn.Linear(model.embed_dim, terms["source_cls"].num_classes)
    if target_cls:
        rows = bench.rows_of_classes(tgt, bench.splits["meta_train"])
        terms["target_cls"] = _RowBatches(rows, bench.data[tgt].labels[rows], batch, seed, "target_cls")
        heads["target"] = nn.Linear(model.embed_dim, terms["target_cls"].num_classes)
    if confusion_weight > 0:
        s_rows = torch.cat([bench.classify_source_rows, bench.align_source_rows])
        t_rows = bench.rows_of_classes(tgt, bench.splits["meta_train"])
        terms["confusion"] = (
            _RowBatches(s_rows, None, batch // 2, seed, "conf_s"),
            _RowBatches(t_rows, None, batch // 2, seed, "conf_t"),
        )
        heads["domain"] = nn.Sequential(nn.Linear(model.embed_dim, 64), nn.ReLU(), nn.Linear(64, 2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "heads"))
        for h in heads.values():
            for m in h.modules():
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
    heads.to(device)
    params = [p for n, p in model.named_parameters() if p.requires_grad and (train_filter is None or train_filter(n))]
    params += list(heads.parameters())
    lr = float(ctx.knob("ordinary_lr", 1e-3))
    opt = make_adam(params, lr, fused=bool(ctx.knob("fused_adam", False)))
    model.train(False)
    running: dict[str, float] = {}
    t0 = time.perf_counter()
    select = bool(ctx.knobs.get("select", True)) and bool(bench.splits.get("meta_val"))
    total_steps = budget.steps
    checks = max(1, int(ctx.knobs.get("val_checks", 6)))
    every = max(1, total_steps // checks) if total_steps is not None else int(ctx.knobs.get("val_every_steps", 200))
    best: dict[str, Any] = {}

    def check(at: int) -> None:
        if not select:
            return
        theta = {k: v.detach() for k, v in model.named_parameters()}
        score = meta_val_score(ctx, model, theta, inputs, bench)
        if not best or score > best["val"]:
            best.update(val=score, step=at, state={k: v.detach().clone() for k, v in model.state_dict().items()})
        best.setdefault("start_val", score)

    def more() -> bool:
        if total_steps is not None:
            return step < total_steps
        return step == 0 or time.perf_counter() - t0 < float(budget.seconds)  # never a run of 0 steps

    examples = 0
    step_items = sum(_term_sizes(terms, cfg.align_batch))  # items one step passes through encoders
    if "confusion" in terms:  # modality labels of a confusion batch: source items, then target items
        domain = torch.cat([torch.zeros(terms["confusion"][0].batch), torch.ones(terms["confusion"][1].batch)]).long().to(device)
    step = 0
    partial = ctx.partial  # croma benchmark --out: keep the state, --resume: continue it (croma.unit_partial)
    # which training of the method this is (a method may train in phases): a state is only continued by its own
    phase = [budget.steps, float(align_weight), bool(source_cls), bool(target_cls), float(confusion_weight)]
    saved = partial.load() if partial is not None else None
    if saved is not None and saved.get("phase") == phase:
        model.load_state_dict(saved["model"])
        heads.load_state_dict(saved["heads"])
        _load_optimizer(opt, saved["optimizer"])
        step, examples, running = int(saved["step"]), int(saved["examples"]), dict(saved["running"])
        best.update(saved["best"])
        t0 = time.perf_counter() - float(saved["seconds"])
    else:
        check(0)
    while more():
        parts: dict[str, torch.Tensor] = {}
        if isinstance(terms.get("align"), MultiAlignTerm):
            parts["align"] = align_weight * terms["align"].loss(model, step)
        elif "align" in terms:
            sampler, objective = terms["align"]
            t = sampler.sample(step)
            zs = model.embed(src, inputs[src][t.source_rows.to(device)])
            zt = model.embed(tgt, inputs[tgt][t.target_rows.to(device)])
            parts["align"] = align_weight * objective(zs, zt)
        if "source_cls" in terms:
            rows, y = terms["source_cls"].get(step)
            parts["source_cls"] = F.cross_entropy(heads["source"](model.embed(src, inputs[src][rows.to(device)])), y.to(device))
        if "target_cls" in terms:
            rows, y = terms["target_cls"].get(step)
            parts["target_cls"] = F.cross_entropy(heads["target"](model.embed(tgt, inputs[tgt][rows.to(device)])), y.to(device))
        if "confusion" in terms:
            (sb, tb) = terms["confusion"]
            rs, _ = sb.get(step)
            rt, _ = tb.get(step)
            z = torch.cat([model.embed(src, inputs[src][rs.to(device)]), model.embed(tgt, inputs[tgt][rt.to(device)])])
            # DANN schedule: the reversal strength ramps from 0 to confusion_weight over the budget.
            if total_steps is not None:
                progress = min(1.0, step / max(total_steps, 1))
            else:
                progress = min(1.0, (time.perf_counter() - t0) / max(float(budget.seconds), 1e-9))
            lam = confusion_weight * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)
            parts["confusion"] = F.cross_entropy(heads["domain"](grad_reverse(z, lam)), domain)
        total = torch.zeros((), device=device)
        for v in parts.values():
            total = total + v
        if not bool(torch.isfinite(total)):
            bad = [k for k, v in parts.items() if not bool(torch.isfinite(v).all())]
            objective = get_loss(cfg.loss, **dict(cfg.loss_hp)) if "align" in bad else None  # its settings, named
            raise NonFiniteLossError(f"ordinary training: non-finite {' and '.join(bad) or 'total'} loss at step {step} "
                                     f"({ordinary_non_finite_advice(bad, lr, objective)})")
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        for k, v in parts.items():
            val = float(v.detach())
            running[k] = 0.95 * running.get(k, val) + 0.05 * val
        examples += step_items
        step += 1
        if step % every == 0 or not more():
            check(step)
            if partial is not None:  # everything the next step depends on (its batches: (seed, step))
                partial.save({"model": model.state_dict(), "heads": heads.state_dict(), "optimizer": _optimizer_state(opt),
                              "step": step, "examples": examples, "running": dict(running), "best": dict(best), "phase": phase,
                              "seconds": time.perf_counter() - t0})
    for p in model.parameters():
        p.grad = None
    if best:
        model.load_state_dict(best["state"])
    return {
        "optimizer_steps": step, "examples": examples, "seconds": time.perf_counter() - t0, "losses": running,
        "lr": lr, "start_val": best.get("start_val"), "best_val": best.get("val"), "best_step": best.get("step"),
    }


def _optimizer_state(opt) -> dict[str, Any]:
    """The optimiser's state for :func:`_load_optimizer` (:class:`PlainAdam`'s moments and step
    counts, or ``torch.optim``'s state dict)."""
    if isinstance(opt, PlainAdam):
        return {"plain": {int(i): list(st) for i, st in opt.state.items()}}
    return {"torch": opt.state_dict()}


def _load_optimizer(opt, state: dict[str, Any]) -> None:
    if isinstance(opt, PlainAdam):
        opt.state = {int(i): [int(st[0]), st[1].to(opt.params[int(i)].device).clone(),
                              st[2].to(opt.params[int(i)].device).clone()] for i, st in state["plain"].items()}
    else:
        opt.load_state_dict(state["torch"])


def _term_sizes(terms: dict[str, Any], align_batch: int):
    """Items one step passes through encoders, per term."""
    for name, t in terms.items():
        if isinstance(t, MultiAlignTerm):
            yield t.items
        elif name == "align":
            yield 2 * align_batch
        elif name == "confusion":
            yield t[0].batch + t[1].batch
        else:
            yield t.batch
