"""Meta-test: k-shot episodes in the target modality, nearest-centroid diagnostic, retrieval.

For each shot ``k`` and repeat ``r``, ``tasks`` fixed N-way episodes are drawn from the target
modality's ``split`` classes (``meta_test``; ``meta_val`` for model selection) with episode
seeds derived from ``(seed, split, r)``. Per task: start from the meta-parameters, initialise the
classifier head (``meta`` | ``zero`` | ``prototype``), fine-tune on the support set for
``finetune_steps`` steps, score the query set. All tasks of one (k, r) run in one vmapped
computation. The accuracy of a repeat is the mean over its tasks; reported as mean ± std over
repeats, in percent. The meta-parameters are never modified (everything is functional).

Also reported:

* nearest-centroid accuracy with the frozen meta-parameters: query embeddings assigned to the
  closest (squared Euclidean) support class mean — a diagnostic of the embedding itself;
* few-shot cross-modal retrieval: for a gallery of ``retrieval_gallery`` strong pairs of the
  split's classes (drawn per repeat), rank the target items by cosine similarity to each source
  query's embedding; R@1/5/10 = how often the paired target item is in the top 1/5/10.

The per-task fine-tuning and nearest-centroid machinery (batched and sequential paths) lives in
:mod:`croma.finetune`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import torch
from torch import nn

from croma.errors import CromaError
from croma.finetune import _Episodes
from croma.finetune import target_param_names as target_param_names  # re-exported (moved to croma.finetune)
from croma.meta.functional import meta_parameters
from croma.meta.inner import InnerConfig
from croma.meta.tasks import derive_seed, model_inputs
from croma.retrieval import retrieval_recalls
from croma.stats import mean_ci95, mean_std
from episodes.data import PreparedBenchmark
from episodes.errors import DataError
from episodes.samplers import ClassificationTaskSampler

__all__ = ["EvalConfig", "HEAD_INITS", "evaluate_kshot", "episode_accuracies", "successive_halving", "choose_head_init",
           "format_results"]

HEAD_INITS = ("meta", "zero", "prototype")
FINETUNE_MODES = ("all", "head")


@dataclass
class EvalConfig:
    """Meta-test settings.

    Attributes:
        shots: k values.
        ways: N.
        tasks: episodes per repeat (paper: 8).
        queries: query items per class (clean labels).
        repeats: R repeats with different episode seeds.
        split: ``meta_test`` or ``meta_val``.
        head_init: ``meta`` (meta-learned classifier), ``zero``, ``prototype`` (rows = normalised
            support class means times ``prototype_scale``, bias 0).
        finetune: ``all`` (target encoder, alignment layer, classifier) or ``head``.
        finetune_steps: fine-tuning steps on each support set (0: none).
        finetune_lr: the fine-tuning learning rate.
        finetune_optimizer: the fine-tuning optimiser, ``sgd`` or ``adam``.
        prototype_scale: multiplies the ``prototype`` head's rows (larger: sharper first logits).
        label_noise: symmetric noise rate on support labels.
        seed: base seed for episodes.
        nearest_centroid: also score nearest-centroid classification (support class means of the
            meta-learned embeddings, no fine-tuning).
        retrieval: also score source -> target retrieval of strong pairs (R@1/5/10).
        retrieval_gallery: strong pairs per retrieval gallery.
        inner_loop: ``batched`` (vmap over tasks) or ``sequential``.
    """

    shots: list[int] = field(default_factory=lambda: [1, 5, 10])
    ways: int = 5
    tasks: int = 8
    queries: int = 5
    repeats: int = 5
    split: str = "meta_test"
    head_init: str = "meta"
    finetune: str = "all"
    finetune_steps: int = 10
    finetune_lr: float = 1e-3
    finetune_optimizer: str = "adam"
    prototype_scale: float = 1.0
    label_noise: float = 0.0
    seed: int = 0
    nearest_centroid: bool = True
    retrieval: bool = True
    retrieval_gallery: int = 100
    inner_loop: str = "batched"

    def validate(self) -> None:
        """Raise ValueError naming the setting as its ``croma evaluate`` flag when out of range
        (the one place these ranges are checked; the CLI calls this before any work): types, the
        ranges of :data:`croma.bounds.BOUNDS`, and the memory ``tasks x ways x (shots + queries)`` implies."""
        from croma.bounds import check_eval

        check_eval(self, HEAD_INITS, FINETUNE_MODES)
        InnerConfig(steps=self.finetune_steps, lr=self.finetune_lr, optimizer=self.finetune_optimizer)


def _run_shared(fn, theta: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], dist: Any) -> torch.Tensor:
    """``fn(theta, batch) -> [T]`` over all tasks of ``batch``, or (``dist``) over this rank's share, gathered."""
    if dist is None or dist.world_size == 1:
        return fn(theta, batch)
    n = next(iter(batch.values())).shape[0]
    mine = dist.shard(n)
    dtype = next(iter(theta.values())).dtype
    out = torch.zeros(n, dtype=dtype, device=next(iter(theta.values())).device)
    if mine:
        idx = torch.tensor(mine, dtype=torch.long)
        part = fn(theta, {k: v[idx.to(v.device)] for k, v in batch.items()})
        out[idx.to(out.device)] = part.to(dtype)
    return dist.all_reduce_sum(out, "all_reduce of meta-val accuracies")


def _episode_batch(
    bench: PreparedBenchmark, x: torch.Tensor, cfg: EvalConfig, shots: int, repeat: int, start: int = 0, count: int | None = None
) -> dict[str, torch.Tensor]:
    """Episodes ``start .. start+count-1`` (default: ``0 .. cfg.tasks-1``) of repeat ``repeat``; episode
    ``i`` depends on ``(cfg.seed, cfg.split, repeat, i)`` only, so a range is a slice of the full set."""
    target = bench.target
    classes = bench.splits.get(cfg.split, [])
    try:
        sampler = ClassificationTaskSampler(
            bench.data[target].labels,
            classes,
            ways=cfg.ways,
            shots=shots,
            queries=cfg.queries,
            seed=derive_seed(cfg.seed, cfg.split, repeat),
            label_noise=cfg.label_noise,
        )
    except DataError as exc:
        from croma.errors import hint

        # the flags controlling these sizes depend on the command running (croma.errors.error_hints)
        advice = hint(f"{cfg.split}_episodes", "use fewer ways, shots or queries (EvalConfig; --ways, --shots, "
                      "--queries)", ways=cfg.ways, shots=shots,
                      queries=cfg.queries)
        raise DataError(f"{bench.name} {cfg.split} episodes ({target}, {shots}-shot): {exc}; {advice}") from exc
    t = sampler.sample_many(int(start), int(cfg.tasks if count is None else count))
    dev = x.device
    rs, rq = t.support_rows.to(dev), t.query_rows.to(dev)
    return {"xs": x[rs], "ys": t.support_labels.to(dev), "xq": x[rq], "yq": t.query_labels.to(dev), "rs": rs, "rq": rq}


def evaluate_kshot(
    model: nn.Module,
    bench: PreparedBenchmark,
    cfg: EvalConfig | None = None,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    inputs: Mapping[str, torch.Tensor] | None = None,
    dist: Any = None,
) -> dict[str, Any]:
    """k-shot meta-test of meta-parameters on the target modality.

    Args:
        model: the :class:`croma.model.CrossModalModel` (only run functionally; never modified).
        bench: the benchmark; episodes come from ``bench.splits[cfg.split]`` target classes.
        cfg: settings (defaults: 1/5/10-shot, 8 tasks x 5-way, 5 repeats).
        params: meta-parameters ``{name: tensor}``; default: the model's trainable parameters.
        inputs: precomputed encoder inputs (``croma.meta.tasks.model_inputs``), else computed.
        dist: a :class:`croma.distributed.Distributed`: every rank draws the same episodes,
            fine-tunes its share of them and the per-episode accuracies are gathered (summed
            into a ``[tasks]`` vector), so every rank returns the same numbers. All ranks must call.

    Returns:
        A plain dict: ``{"split", "ways", "tasks", "queries", "repeats", "head_init", "finetune",
        "rows": [{"shots", "accuracy_mean", "accuracy_std", "accuracies", "centroid_mean",
        "centroid_std", "repeats"}], "retrieval": {"gallery", "queries", "r1_mean", "r1_std", "r1_ci95", ...} | None,
        "config": {...}}``. Accuracies in percent.

    Raises:
        ValueError: bad settings. CromaError: ``head_init="meta"`` with ``ways`` different from
        the classifier's outputs. DataError: too few classes / items for the episodes.
    """
    cfg = cfg or EvalConfig()
    cfg.validate()
    theta = dict(params) if params is not None else meta_parameters(model)
    rows_w = theta["classifier.weight"].shape[0]
    if cfg.head_init == "meta" and rows_w != cfg.ways:
        raise CromaError(
            f"head init 'meta' needs {rows_w}-way tasks (the classifier has {rows_w} outputs); "
            f"use --ways {rows_w} or --head-init prototype|zero"
        )
    device = next(iter(theta.values())).device
    inputs = dict(inputs) if inputs is not None else model_inputs(model, bench, device)
    x_t = inputs[bench.target]
    eps = _Episodes(model, bench.target, cfg, names=list(theta))
    need_z = cfg.inner_loop == "batched" and (eps.frozen_embedding or cfg.head_init == "prototype" or cfg.nearest_centroid)
    z_all = eps.embed_all(theta, x_t) if need_z else None
    rows = []
    for k in cfg.shots:
        accs, cents, per_ep, per_ep_c = [], [], [], []
        for r in range(cfg.repeats):
            b = _episode_batch(bench, x_t, cfg, int(k), r)
            with torch.enable_grad():
                acc = _run_shared(lambda th, bb: eps.accuracies(th, bb, z_all), theta, b, dist)
            per_ep += [100.0 * float(a) for a in acc.tolist()]
            accs.append(100.0 * float(acc.mean()))
            if cfg.nearest_centroid:
                with torch.no_grad():
                    cen = _run_shared(lambda th, bb: eps.centroids(th, bb, z_all), theta, b, dist)
                per_ep_c += [100.0 * float(a) for a in cen.tolist()]
                cents.append(100.0 * float(cen.mean()))
        row: dict[str, Any] = {"shots": int(k), "repeats": cfg.repeats, "accuracies": accs, "episodes": len(per_ep)}
        row["accuracy_mean"], row["accuracy_std"] = mean_std(accs)
        row["accuracy_ci95"] = mean_ci95(per_ep)[1]
        row["episode_accuracies"] = per_ep
        if cents:
            row["centroid_accuracies"] = cents
            row["centroid_mean"], row["centroid_std"] = mean_std(cents)
            row["centroid_ci95"] = mean_ci95(per_ep_c)[1]
            row["centroid_episode_accuracies"] = per_ep_c
        rows.append(row)
    retrieval = retrieval_recalls(eps.fm, theta, bench, inputs, cfg) if cfg.retrieval else None
    return {
        "split": cfg.split,
        "ways": cfg.ways,
        "tasks": cfg.tasks,
        "queries": cfg.queries,
        "repeats": cfg.repeats,
        "head_init": cfg.head_init,
        "finetune": cfg.finetune,
        "rows": rows,
        "retrieval": retrieval,
        "config": asdict(cfg),
    }


def episode_accuracies(
    model: nn.Module,
    bench: PreparedBenchmark,
    cfg: EvalConfig,
    shots: int,
    start: int,
    stop: int,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    inputs: Mapping[str, torch.Tensor] | None = None,
    z_cache: dict | None = None,
    chunk: int | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """Fine-tuned query accuracies ``[stop - start]`` (fractions in [0, 1]) of episodes
    ``start .. stop-1`` of repeat 0 of ``cfg`` at ``shots`` — the same numbers as those episodes in
    :func:`evaluate_kshot` (``episode_accuracies / 100`` of its row), computed alone.

    ``z_cache``: a dict reused across calls with the same parameters and inputs (the frozen
    target embeddings are computed once into it). ``chunk``, ``compile``: see :class:`croma.finetune._Episodes`.
    """
    cfg.validate()
    theta = dict(params) if params is not None else meta_parameters(model)
    device = next(iter(theta.values())).device
    inputs = dict(inputs) if inputs is not None else model_inputs(model, bench, device)
    x_t = inputs[bench.target]
    eps = _Episodes(model, bench.target, cfg, names=list(theta), compile=compile, **({} if chunk is None else {"chunk": chunk}))
    z_all = None
    if cfg.inner_loop == "batched" and (eps.frozen_embedding or cfg.head_init == "prototype"):
        if z_cache is None or "z" not in z_cache:
            z_all = eps.embed_all(theta, x_t)
            if z_cache is not None:
                z_cache["z"] = z_all
        else:
            z_all = z_cache["z"]
    b = _episode_batch(bench, x_t, cfg, int(shots), 0, start=start, count=stop - start)
    with torch.enable_grad():
        return eps.accuracies(theta, b, z_all)


def successive_halving(
    names: list[str], episodes: int, run, *, keep: float = 0.5
) -> tuple[str, dict[str, float], dict[str, int]]:
    """Pick the candidate with the best mean accuracy over ``episodes`` episodes, scoring most
    candidates on a prefix only (successive halving).

    Rung sizes double up to ``episodes``: with ``m`` candidates the first rung scores all of them
    on ``ceil(episodes / 2^(ceil(log2 m) - 1))`` episodes, keeps the better half (``keep``; ties to
    the earlier name), extends the survivors' episodes to the next rung, and so on; the last two
    candidates are scored on all ``episodes``. Episodes already scored are never recomputed.

    Args:
        names: candidates, in preference order for ties.
        episodes: episodes of the final rung.
        run: ``run(name, start, stop) -> tensor [stop - start]`` of per-episode accuracies.

    Returns:
        ``(best, scores, counts)``: ``scores[name]`` = 100 x the mean accuracy over the
        ``counts[name]`` episodes it was scored on (``episodes`` for the finalists).
    """
    if not names:
        raise ValueError("successive_halving: no candidates")
    acc: dict[str, torch.Tensor] = {}
    alive = list(names)
    while True:
        levels = max(0, math.ceil(math.log2(len(alive))) - 1) if len(alive) > 1 else 0
        target = max(1, math.ceil(episodes / 2**levels))
        for n in alive:
            have = 0 if n not in acc else int(acc[n].shape[0])
            if have < target:
                part = run(n, have, target)
                acc[n] = part if n not in acc else torch.cat([acc[n], part])
        scores = {n: 100.0 * float(acc[n].mean()) for n in acc}
        if target >= episodes or len(alive) <= 1:
            break
        ranked = sorted(alive, key=lambda n: (-scores[n], names.index(n)))
        survivors = set(ranked[: max(1, math.ceil(len(alive) * keep))])
        alive = [n for n in alive if n in survivors]
    best = max(alive, key=lambda n: (scores[n], -names.index(n)))
    return best, scores, {n: int(v.shape[0]) for n, v in acc.items()}


def choose_head_init(
    model: nn.Module,
    bench: PreparedBenchmark,
    cfg: EvalConfig,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    inputs: Mapping[str, torch.Tensor] | None = None,
    dist: Any = None,
) -> tuple[str, dict[str, float]]:
    """Pick the head initialisation with the best **meta-val** accuracy.

    ``cfg.split`` is forced to ``meta_val``; accuracies are averaged over ``cfg.shots``. ``meta`` is
    skipped when the classifier's outputs differ from ``cfg.ways``. Ties go to the earlier of
    ``meta``, ``zero``, ``prototype``.

    Returns:
        ``(best_name, {name: mean accuracy in percent})``.
    """
    theta = dict(params) if params is not None else meta_parameters(model)
    scores: dict[str, float] = {}
    for name in HEAD_INITS:
        if name == "meta" and theta["classifier.weight"].shape[0] != cfg.ways:
            continue
        c = replace(cfg, split="meta_val", head_init=name, nearest_centroid=False, retrieval=False)
        res = evaluate_kshot(model, bench, c, params=theta, inputs=inputs, dist=dist)
        scores[name] = sum(r["accuracy_mean"] for r in res["rows"]) / len(res["rows"])
    best = max(scores, key=lambda n: (scores[n], -HEAD_INITS.index(n)))
    return best, scores


def format_results(result: Mapping[str, Any]) -> str:
    """A text table of :func:`evaluate_kshot` results: mean ± 95% interval over episodes.

    Args:
        result: the dict :func:`evaluate_kshot` (or :func:`croma.evaluate_run`) returns.

    Returns:
        The table as text, one line per k, then the interval's definition and retrieval's line.
    """
    eps = result["rows"][0].get("episodes") if result["rows"] else None
    lines = [
        f"{result['split']}: {result['ways']}-way, {result['tasks']} tasks x {result['repeats']} repeats, "
        f"{result['queries']} quer{'y' if result['queries'] == 1 else 'ies'}/class, head init {result['head_init']}, fine-tune {result['finetune']}",
        f"{'shots':>5}  {'accuracy (%)':>16}  {'nearest centroid (%)':>20}",
    ]
    for r in result["rows"]:
        spread, cspread = r.get("accuracy_ci95", r["accuracy_std"]), r.get("centroid_ci95", r.get("centroid_std"))
        acc = f"{r['accuracy_mean']:6.2f} ± {spread:5.2f}"
        cen = f"{r['centroid_mean']:6.2f} ± {cspread:5.2f}" if "centroid_mean" in r else "-"
        lines.append(f"{r['shots']:>5}  {acc:>16}  {cen:>20}" + (f"  {r['setting']}" if r.get("setting") else ""))
    if eps:
        lines.append(f"± is the 95% interval over {eps} episodes (1.96·sd/√n)")
        flat = [str(r["shots"]) for r in result["rows"] if r.get("accuracy_ci95") == 0 and (r.get("episodes") or 0) > 1]
        if flat:
            lines.append(f"± 0.00 (k={', '.join(flat)}): every episode scored the same; no spread to measure, "
                         "not certainty")
    ret = result.get("retrieval")
    if ret:
        lines.append(
            f"retrieval (source -> target, gallery {ret['gallery']}): "
            + ", ".join(f"R@{k} {ret[f'r{k}_mean']:.1f} [{ret[f'r{k}_ci95_low']:.1f}, {ret[f'r{k}_ci95_high']:.1f}]"
                        if f"r{k}_ci95_low" in ret else
                        f"R@{k} {ret[f'r{k}_mean']:.1f} ± {ret.get(f'r{k}_ci95', ret[f'r{k}_std']):.1f}"
                        for k in (1, 5, 10))
            + (f" ([Wilson 95% interval] over {ret['queries']} queries)" if "r1_ci95_low" in ret
               else f" (± 95% interval over {ret['queries']} queries)" if "queries" in ret else "")
        )
        chance = 100.0 / max(1, int(ret["gallery"]))
        if ret.get("r1_ci95_low", chance + 1) <= chance <= ret.get("r1_ci95_high", chance - 1):
            lines.append(f"note: R@1 cannot be told from chance (1 in {ret['gallery']}, {chance:.1f} %): source and target "
                         "embeddings are not aligned on these classes (images on raw pixels: try a pretrained --backbone)")
    else:
        lines.append("retrieval: n/a (no strong pairs among the split's classes)")
    return "\n".join(lines)
