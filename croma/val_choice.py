"""The meta-val choice of the meta-test setting (head init x fine-tuning steps x what is fine-tuned).

A trained method is meta-tested with the setting chosen here, per k-shot, on **meta-val**
episodes (never meta-test). Two rules, picked by the knob ``val_rule`` (default :data:`VAL_RULE`):

``"best"``
    the candidate with the best mean meta-val accuracy; ties go to the earlier :func:`eval_grid`
    entry. Near-equal candidates make this choice flip between training seeds.
``"simplest"``
    every candidate is scored on the same meta-val episodes (per-episode accuracies, paired); the
    best mean is found as above; then the **simplest** candidate (:func:`simplicity_key`) whose
    paired difference to the best is within noise is chosen. Within noise: with ``d_e`` = the
    candidate's accuracy minus the best's on episode ``e`` (``n`` episodes), its one-sided paired 95%
    upper bound ``mean(d) + 1.645 * sd(d) / sqrt(n)`` (``sd`` with ``n - 1``; 0 when ``n < 2``)
    reaches 0 (:func:`simplest_within_noise`). The best itself is always within noise, so the rule
    never picks a candidate the data say is worse at the 5% level.

Simplicity (cheapest and least adaptive first), :func:`simplicity_key`: no fine-tuning (0 steps)
before fine-tuning the head only before fine-tuning all parameters; then fewer steps first; then
the head init ``prototype`` before ``meta`` before ``zero`` (a data-given head before a learned one
before one fitted from scratch); then the smaller learning rate; then the grid order.

With ``val_halving`` (successive halving, :func:`croma.evaluate.successive_halving`) and
``"simplest"``, the rule is applied among the candidates halving scored on every episode (its
finalists), paired on those episodes; the others were not scored on the same episodes.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any, Mapping

import torch
from torch import nn

from croma.log import unit_note

HEAD_CHOICES = ("meta", "zero", "prototype")
#: default of the ``val_halving`` knob: choose the meta-test setting by successive halving of the
#: candidates (:func:`croma.evaluate.successive_halving`) instead of scoring every one on every episode
VAL_HALVING = False
#: the rules of the ``val_rule`` knob (see the module docstring)
VAL_RULES = ("best", "simplest")
#: default of the ``val_rule`` knob, from experiments/tools/val_choice_study.py
#: (experiments/results/val_choice_study.json; udhr-speech quick, croma / align-classify / pretrain x
#: 3 seeds, chosen on 100 meta-val episodes, judged on 100 other meta-val episodes): ``"simplest"`` was
#: not better on held-out meta-val (83.21 vs 83.36, regret 0.25 vs 0.10 points) and its choice did not
#: vary less over seeds (1.67 vs 1.56 distinct settings per (method, k)), so ``"best"`` stays
VAL_RULE = "best"
#: one-sided 95% normal quantile of the paired noise bound of ``"simplest"``
NOISE_Z = 1.645
#: simplicity order of the head inits and fine-tuning modes (earlier: simpler)
SIMPLE_HEADS = ("prototype", "meta", "zero")
SIMPLE_MODES = ("head", "all")


def grid_name(g: Mapping[str, Any]) -> str:
    """``"<head>/<steps>/<lr>/<mode>"``: the name of a setting in scores and choices."""
    return f"{g['head_init']}/{g['finetune_steps']}/{g['finetune_lr']:g}/{g['finetune']}"


def simplicity_key(g: Mapping[str, Any]) -> tuple:
    """Sort key of a setting, simplest first: (0 steps | head-only | all, steps, head init, lr).

    0 steps: nothing is fine-tuned, so the mode does not count; the head init order is
    :data:`SIMPLE_HEADS`, the mode order :data:`SIMPLE_MODES`.
    """
    steps = int(g["finetune_steps"])
    tier = 0 if steps == 0 else 1 + SIMPLE_MODES.index(g["finetune"])
    return (tier, steps, SIMPLE_HEADS.index(g["head_init"]), float(g["finetune_lr"]))


def support_blind(g: Mapping[str, Any]) -> bool:
    """Whether a setting never looks at the support set: the meta head without fine-tuning (its
    outputs are not tied to the episode's classes, so it scores chance by construction). The rules
    take it only when nothing else is as good."""
    return g["head_init"] == "meta" and int(g["finetune_steps"]) == 0


def best_of(scores: Mapping[str, Mapping[int, float]], grid: Mapping[str, Mapping[str, Any]], k: int) -> str:
    """The ``"best"`` rule: the highest meta-val score at ``k``, the first in grid order among ties,
    but never a :func:`support_blind` setting over a tie (a tiny data set's all-equal scores chose
    the meta head without fine-tuning, which predicts without looking at the support set)."""
    return max(scores, key=lambda name: (scores[name][k], not support_blind(grid[name])))


def simplest_within_noise(
    acc: Mapping[str, torch.Tensor], grid: Mapping[str, Mapping[str, Any]], *, z: float = NOISE_Z
) -> dict[str, Any]:
    """The ``"simplest"`` rule on per-episode accuracies (pure: no model, no data).

    Args:
        acc: ``{name: tensor [n]}`` per-episode accuracies of each candidate on the **same** ``n``
            episodes, candidates in grid order (the order breaks ties of the best mean).
        grid: ``{name: setting}`` with ``head_init``, ``finetune_steps``, ``finetune_lr``, ``finetune``.
        z: the one-sided normal quantile (1.645: 95%).

    Returns:
        ``{"choice", "best", "within", "means", "bounds"}``: the chosen name; the name with the best
        mean (first of ties); the names within noise of the best, simplest first; each candidate's
        mean (same unit as ``acc``); each candidate's upper bound ``mean(d) + z * se(d)`` of its paired
        difference to the best (within noise: bound >= 0, up to float round-off of 1e-12).
    """
    names = list(acc)
    if not names:
        raise ValueError("simplest_within_noise: no candidates")
    n = {int(acc[c].numel()) for c in names}
    if len(n) != 1:
        raise ValueError(f"simplest_within_noise: candidates scored on different episode counts {sorted(n)}; the rule is paired")
    a = {c: acc[c].detach().double().reshape(-1).cpu() for c in names}
    means = {c: float(a[c].mean()) for c in names}
    best = max(names, key=lambda c: means[c])  # max keeps the first of ties
    bounds = {}
    for c in names:
        d = a[c] - a[best]
        se = float(d.std(unbiased=True)) / math.sqrt(d.numel()) if d.numel() > 1 else 0.0
        bounds[c] = float(d.mean()) + z * se
    order = {c: i for i, c in enumerate(names)}
    within = sorted((c for c in names if bounds[c] >= -1e-12),
                    key=lambda c: (support_blind(grid[c]), simplicity_key(grid[c]), order[c]))
    return {"choice": within[0], "best": best, "within": within, "means": means, "bounds": bounds}


def eval_grid(ctx: Any) -> list[dict[str, Any]]:
    """Meta-test settings chosen among on meta-val: head init × fine-tuning steps.

    Steps are ``knobs['finetune_grid']`` (default ``[0, T, 2.5T]`` with ``T`` the preset's
    fine-tuning steps), learning rates ``knobs['finetune_lr_grid']`` and what is fine-tuned
    ``knobs['finetune_mode_grid']`` (``all`` | ``head``; defaults: the preset's);
    0 steps is only offered with a non-zero head (``meta``/``prototype``: a nearest-prototype
    classifier without fine-tuning). ``ctx``: a :class:`croma.baselines.common.MethodContext`.
    """
    t = int(ctx.eval.finetune_steps)
    steps = ctx.knobs.get("finetune_grid") or sorted({0, t, int(round(2.5 * t))})
    lrs = ctx.knobs.get("finetune_lr_grid") or [float(ctx.eval.finetune_lr)]
    modes = ctx.knobs.get("finetune_mode_grid") or [ctx.eval.finetune]
    grid = []
    for head in HEAD_CHOICES:
        for s in steps:
            if s == 0 and head == "zero":
                continue
            for lr in lrs if s > 0 else lrs[:1]:
                for mode in modes if s > 0 else modes[:1]:
                    grid.append({"head_init": head, "finetune_steps": int(s), "finetune_lr": float(lr), "finetune": mode})
    return grid


def val_rule(ctx: Any) -> str:
    """The ``val_rule`` knob (default :data:`VAL_RULE`), checked."""
    rule = ctx.knobs.get("val_rule", VAL_RULE)
    if rule not in VAL_RULES:
        raise ValueError(f"knob val_rule must be one of {', '.join(VAL_RULES)} (got {rule!r}); "
                         f"it picks how the meta-val choice of the meta-test setting is made")
    return rule


def meta_val_config(ctx: Any):
    """The meta-val :class:`croma.evaluate.EvalConfig` the choice scores on (``val_episodes`` episodes)."""
    return replace(
        ctx.eval,
        split="meta_val",
        repeats=1,
        tasks=int(ctx.knobs.get("val_episodes", 100)),
        label_noise=ctx.label_noise,
        nearest_centroid=False,
        retrieval=False,
    )


def candidate_grid(ctx: Any, params: Mapping[str, torch.Tensor], base=None) -> dict[str, dict[str, Any]]:
    """``{name: setting}`` of :func:`eval_grid`, grid order; ``meta`` is left out when the
    classifier's outputs differ from the ways."""
    base = base if base is not None else meta_val_config(ctx)
    ways_ok = params["classifier.weight"].shape[0] == base.ways
    return {grid_name(g): g for g in eval_grid(ctx) if ways_ok or g["head_init"] != "meta"}


def candidate_accuracies(
    ctx: Any, model: nn.Module, params: Mapping[str, torch.Tensor], inputs, k: int, start: int, stop: int,
    *, base=None, z_cache: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Per-episode meta-val accuracies (fractions) of every candidate on episodes ``start..stop-1``
    at ``k`` shots (the same episodes for every candidate: paired)."""
    from croma.evaluate import episode_accuracies

    base = base if base is not None else meta_val_config(ctx)
    z_cache = {} if z_cache is None else z_cache
    return {
        name: episode_accuracies(model, ctx.bench, replace(base, shots=[int(k)], **g), int(k), start, stop,
                                 params=params, inputs=inputs, z_cache=z_cache)
        for name, g in candidate_grid(ctx, params, base).items()
    }


def _choice_entry(g: Mapping[str, Any], meta_val: float) -> dict[str, Any]:
    return {"head_init": g["head_init"], "finetune_steps": int(g["finetune_steps"]),
            "finetune_lr": float(g["finetune_lr"]), "finetune": g["finetune"], "meta_val": meta_val}


def _rule_entry(g: Mapping[str, Any], res: Mapping[str, Any]) -> dict[str, Any]:
    """A ``"simplest"`` choice with what the rule did (JSON-plain: results.json copies it)."""
    return {**_choice_entry(g, 100.0 * res["means"][res["choice"]]), "rule": "simplest",
            "best": res["best"], "within": list(res["within"])}


def select_eval(
    ctx: Any, model: nn.Module, params: dict[str, torch.Tensor], inputs=None
) -> tuple[dict[int, dict[str, Any]], dict[str, dict[int, float]]]:
    """Choose, per k-shot setting, the head init and fine-tuning steps on **meta-val**.

    Returns:
        ``(choice, scores)``: ``{k: {"head_init", "finetune_steps", "finetune_lr", "finetune", "meta_val"}}``
        and ``{"<head>/<steps>/<lr>/<mode>": {k: accuracy}}`` (percent, meta-val).
        ``meta`` is skipped when the classifier's outputs differ from the ways.

    The knob ``val_rule`` (default :data:`VAL_RULE`) picks the rule (module docstring): ``"best"``
    (best mean, ties to the earlier grid entry) or ``"simplest"`` (the simplest candidate within
    paired noise of the best; its choice also holds ``"rule"``, ``"best"``: the best mean's name and
    ``"within"``: the names within noise, simplest first).

    With the knob ``val_halving`` (default :data:`VAL_HALVING`) the candidates are compared by
    successive halving per k (:func:`_select_eval_halving`): the choice is the full grid's unless
    the full grid's best falls out of an early rung; an eliminated candidate's score is its mean
    over the episodes it was scored on.
    """
    rule = val_rule(ctx)
    base = meta_val_config(ctx)
    if ctx.knobs.get("val_halving", VAL_HALVING):
        return _select_eval_halving(ctx, model, params, inputs, base, rule)
    if rule == "simplest":
        return _select_eval_simplest(ctx, model, params, inputs, base)
    from croma.evaluate import evaluate_kshot

    scores: dict[str, dict[int, float]] = {}
    grid = candidate_grid(ctx, params, base)
    partial = getattr(ctx, "partial", None)  # croma benchmark --out: each setting's scores are kept for --resume
    for i, (name, g) in enumerate(grid.items()):
        kept = partial.kept("meta_val_choice", name) if partial is not None else None
        if kept is not None:
            scores[name] = {int(k): float(v) for k, v in kept.items()}
            continue
        unit_note(f"meta-val choice: scoring setting {i + 1} of {len(grid)} ({name})")
        t0, c0 = time.perf_counter(), time.process_time()
        res = evaluate_kshot(model, ctx.bench, replace(base, **g), params=params, inputs=inputs)
        scores[name] = {int(r["shots"]): r["accuracy_mean"] for r in res["rows"]}
        if partial is not None:
            partial.keep("meta_val_choice", name, {str(k): v for k, v in scores[name].items()},
                         time.perf_counter() - t0, time.process_time() - c0)
    choice: dict[int, dict[str, Any]] = {}
    for k in base.shots:
        best = best_of(scores, grid, int(k))
        head, steps, lr, mode = best.split("/")
        choice[int(k)] = {
            "head_init": head, "finetune_steps": int(steps), "finetune_lr": float(lr), "finetune": mode,
            "meta_val": scores[best][int(k)],
        }
    return choice, scores


def _select_eval_simplest(ctx, model, params, inputs, base):
    """:func:`select_eval` by the ``"simplest"`` rule: every candidate on every episode, paired."""
    grid = candidate_grid(ctx, params, base)
    z_cache: dict = {}
    scores: dict[str, dict[int, float]] = {n: {} for n in grid}
    choice: dict[int, dict[str, Any]] = {}
    for k in base.shots:
        acc = candidate_accuracies(ctx, model, params, inputs, int(k), 0, int(base.tasks), base=base, z_cache=z_cache)
        res = simplest_within_noise(acc, grid)
        for n, m in res["means"].items():
            scores[n][int(k)] = 100.0 * m
        choice[int(k)] = _rule_entry(grid[res["choice"]], res)
    return choice, scores


def _select_eval_halving(ctx, model, params, inputs, base, rule="best"):
    """:func:`select_eval` by successive halving (:func:`croma.evaluate.successive_halving`), per k:
    every candidate scored on the first quarter of the meta-val episodes (8 candidates), the better
    half extended to half of them, the best two to all; the finalists' scores equal the full grid's.
    With ``rule="simplest"`` the rule picks among the candidates scored on every episode."""
    from croma.evaluate import episode_accuracies, successive_halving

    grid = candidate_grid(ctx, params, base)
    names = list(grid)
    z_cache: dict = {}
    scores: dict[str, dict[int, float]] = {n: {} for n in names}
    choice: dict[int, dict[str, Any]] = {}
    for k in base.shots:
        seen: dict[str, list[torch.Tensor]] = {}

        def run(name: str, start: int, stop: int, k: int = int(k), seen=seen) -> torch.Tensor:
            cfg = replace(base, shots=[k], **grid[name])
            part = episode_accuracies(model, ctx.bench, cfg, k, start, stop, params=params, inputs=inputs, z_cache=z_cache)
            seen.setdefault(name, []).append(part)
            return part

        best, sc, counts = successive_halving(names, int(base.tasks), run)
        for n, v in sc.items():
            scores[n][int(k)] = v
        if rule == "simplest":
            full = {n: torch.cat(seen[n]) for n in names if counts.get(n) == int(base.tasks)}
            res = simplest_within_noise(full, grid)
            entry = _rule_entry(grid[res["choice"]], res)
            choice[int(k)] = {**entry, "meta_val": sc[res["choice"]]}
        else:
            choice[int(k)] = _choice_entry(grid[best], sc[best])
    return choice, scores
