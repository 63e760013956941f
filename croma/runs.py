"""A trained run, reloaded and meta-tested: :func:`load_run`, :func:`evaluate_run` (``croma evaluate``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from croma.checkpoint import check_parameters, checkpoint_path, load_checkpoint, train_config
from croma.errors import CromaError
from croma.evaluate import EvalConfig, choose_head_init, evaluate_kshot
from croma.factory import bench_to, build_from_config, eval_config_from, load_bench, resolve_device
from croma.meta.functional import load_parameters, meta_parameters

__all__ = ["load_run", "evaluate_run", "resolve_checkpoint", "check_same_data"]


def resolve_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a run folder (or ``run_dir`` itself when it is a ``.pt`` file):
    ``which="best"`` falls back to ``last.pt`` only when no meta-val has selected a best
    checkpoint (``last.pt`` records none).

    Raises:
        CromaError: a deleted ``best.pt`` that meta-val had selected; neither a folder nor a .pt file.
    """
    path = checkpoint_path(run_dir, which)
    if which == "best" and not path.is_file() and Path(run_dir).is_dir():
        last = checkpoint_path(run_dir, "last")
        if last.is_file() and load_checkpoint(last).get("best_val") is not None:
            raise CromaError(
                f"{path} is missing although meta-val selected a best checkpoint (see {last}); restore it, or "
                f"pass --checkpoint last to evaluate the last parameters"
            )
        path = last
    return path


def check_one_run(path: Path, ckpt: dict) -> None:
    """Refuse a checkpoint whose run folder's ``last.pt`` / ``best.pt`` / ``metrics.csv`` come from
    different runs (their ``run_id``; files without one are accepted): :func:`croma.runlock.check_same_run`."""
    if path.name in ("last.pt", "best.pt"):
        from croma.runlock import check_same_run

        check_same_run(path.parent, {path.name: ckpt.get("run_id")})


def load_run(run_dir: str, *, which: str = "best", device: str = "auto", data_root: str | None = None,
             cache_dir: str | None = None, manifest: str | None = None):
    """Rebuild model, benchmark and meta-parameters from a run directory (or a ``.pt`` file).

    Paths to data come from the caller, never from the checkpoint (a shared checkpoint must not
    choose what this machine reads or writes).

    Args:
        run_dir: the run folder (``--checkpoint-dir`` of ``croma train``) or a checkpoint file.
        which: ``best`` (falls back to ``last.pt`` only when no meta-val has selected a best
            checkpoint yet; a deleted ``best.pt`` is an error) or ``last``.
        device: ``auto``, ``cpu`` or ``cuda``.
        data_root: folder holding the data sets (None: ``$CROMA_DATA``).
        cache_dir: feature cache folder (None: the default cache).
        manifest: for a run trained on a JSONL manifest, the manifest (required then).

    Returns:
        ``(model, bench, theta, ckpt, train_cfg)``: model on the device with ``theta`` loaded,
        the benchmark with features on the device, the checkpoint dict, the
        :class:`croma.config.TrainConfig`.

    Raises:
        CromaError: missing / malformed checkpoint (types, non-finite values, shapes against the
            model), a deleted ``best.pt``, a manifest run without ``manifest``.
    """
    path = resolve_checkpoint(run_dir, which)
    ckpt = load_checkpoint(path)
    check_one_run(path, ckpt)
    cfg = train_config(ckpt, path)
    cfg.data_root, cfg.cache_dir = data_root, cache_dir
    if cfg.benchmark == "manifest":
        if manifest is None:
            raise CromaError(f"{path} was trained on a JSONL manifest: pass --manifest PATH (the path stored in "
                             f"the checkpoint is not used)")
        cfg.manifest = manifest
    elif manifest is not None:  # it would be ignored: the run's data is the benchmark it names
        raise CromaError(f"--manifest {manifest}: {path} was trained on {cfg.benchmark}, not on a JSONL manifest "
                         "(leave --manifest out, or evaluate the run that was trained on it)")
    else:
        cfg.manifest = None
    dev = resolve_device(device)
    bench = load_bench(cfg)
    check_same_data(ckpt, bench, path, manifest=cfg.manifest)
    model = build_from_config(cfg, bench)
    check_parameters(ckpt["model"], meta_parameters(model), path)
    try:
        load_parameters(model, ckpt["model"])
    except (KeyError, RuntimeError) as exc:
        raise CromaError(f"{path}: parameters do not match the model its config describes ({exc})") from exc
    model = model.to(dev).eval()
    theta = {k: v.to(dev) for k, v in ckpt["model"].items()}
    return model, bench_to(bench, dev), theta, ckpt, cfg


def check_same_data(ckpt: dict[str, Any], bench: Any, path: Path, *, manifest: str | None = None) -> None:
    """Refuse to meta-test a run on data other than its own: the class split and the data identity
    stored in the checkpoint (``serving``, :mod:`croma.runmodel`) must equal those of ``bench``.
    A checkpoint written before runs stored them has nothing to compare (accepted).

    Raises:
        CromaError: naming the data (``--manifest`` path or benchmark) and the classes that moved
            between splits, or how the items differ.
    """
    from croma.runcard import class_split_names, data_identity, split_changes

    card = ckpt.get("serving")
    if not isinstance(card, dict) or not isinstance(card.get("split"), dict) or not isinstance(card.get("data"), dict):
        return
    what = f"--manifest {manifest}" if manifest else f"benchmark {bench.name}"
    moved = split_changes(card["split"], class_split_names(bench))  # the user's own change first
    if moved:
        more = f" and {len(moved) - 6} more" if len(moved) > 6 else ""
        raise CromaError(f"{what} is not the data {path} was trained on: its class split differs "
                         f"({'; '.join(moved[:6])}{more}), so meta-test would score classes the run trained on; "
                         "pass the run's own data, or train a new run on this one")
    ident = data_identity(bench)
    if ident["digest"] != card["data"].get("digest"):
        then, now = card["data"].get("items", {}), ident["items"]
        gone = [m for m in then if m not in now]
        if gone:  # a modality the run trained with (an extra one, say) is not in this data
            raise CromaError(f"{what} is not the data {path} was trained on: it holds no {', '.join(gone)} items "
                             f"(the run had {', '.join(f'{m} {then[m]}' for m in gone)}); pass the run's own data, "
                             "or train a new run on this one")
        counts = ", ".join(f"{m}: {then.get(m, 0)} then, {n} now" for m, n in now.items())
        raise CromaError(f"{what} is not the data {path} was trained on: the same classes, but items were added, "
                         f"removed or relabelled ({counts}); pass the run's own data, or train a new run on this one")


_EVAL_OVERRIDES = ("shots", "repeats", "tasks", "ways", "queries", "head_init", "finetune", "finetune_steps",
                   "finetune_lr", "finetune_optimizer", "label_noise", "split", "seed", "nearest_centroid", "retrieval")


def evaluate_run(
    run_dir: str,
    eval_cfg: EvalConfig | None = None,
    *,
    which: str = "best",
    device: str = "auto",
    data_root: str | None = None,
    cache_dir: str | None = None,
    manifest: str | None = None,
    dist: Any = None,
    strict_sizes: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Meta-test a trained run (what ``croma evaluate DIR`` does).

    Args:
        run_dir: the run folder (or a ``.pt`` checkpoint).
        eval_cfg: the episodes and fine-tuning (None: from the run's training settings,
            :func:`croma.factory.eval_config_from`, on ``meta_test`` with 1/5/10 shots, 5 repeats
            of 8 tasks, nearest centroid and retrieval).
        which: ``best`` or ``last`` checkpoint (as :func:`load_run`).
        device: ``auto``, ``cpu`` or ``cuda``.
        data_root: folder holding the data sets (None: ``$CROMA_DATA``); never from the checkpoint.
        cache_dir: feature cache folder (None: the default cache).
        manifest: the JSONL manifest of a run trained on one (required then).
        dist: split the episodes across the ranks of a :class:`croma.distributed.Distributed`
            (all ranks call; all get the result).
        strict_sizes: episode sizes exactly as asked (else sizes the split's classes cannot fill
            are fitted, :func:`fit_episode_sizes`, and the result's ``task_sizes`` line says how).
        **overrides: :class:`~croma.evaluate.EvalConfig` fields by name (``shots``, ``repeats``,
            ``tasks``, ``ways``, ``queries``, ``head_init``, ``finetune``, ``finetune_steps``,
            ``finetune_lr``, ``label_noise``, ``split``, ``seed``, ...; ``None`` keeps the default).
            ``head_init`` unset uses the initialisation recorded in the checkpoint (chosen on
            meta-val when trained with ``auto``); ``"auto"`` chooses now, on meta-val.

    Returns:
        :func:`evaluate_kshot`'s dict plus ``"checkpoint"``, ``"iteration"`` and ``"head_scores"``.

    Raises:
        TypeError: an override that is not an EvalConfig field.
    """
    bad = sorted(set(overrides) - set(_EVAL_OVERRIDES))
    if bad:
        raise TypeError(f"evaluate_run() got unknown setting(s) {', '.join(bad)} (EvalConfig fields: "
                        f"{', '.join(_EVAL_OVERRIDES)})")
    model, bench, theta, ckpt, tcfg = load_run(run_dir, which=which, device=device, data_root=data_root,
                                             cache_dir=cache_dir, manifest=manifest)
    if eval_cfg is not None:
        cfg = replace(eval_cfg)
    else:
        cfg = eval_config_from(tcfg, shots=[1, 5, 10], repeats=5, tasks=8, queries=5, split="meta_test",
                               label_noise=0.0, nearest_centroid=True, retrieval=True)
    head_init = overrides.pop("head_init", None)
    for k, v in overrides.items():
        if v is not None:
            setattr(cfg, k, list(v) if k == "shots" else v)
    cfg.validate()
    cfg, sizes_line = fit_episode_sizes(bench, cfg, strict=strict_sizes)
    head_scores = ckpt.get("head_scores")
    per_k = _chosen_per_k(ckpt)
    if per_k and eval_cfg is None and head_init is None and all(
            overrides.get(k) is None for k in ("finetune", "finetune_steps", "finetune_lr")):
        result = _evaluate_per_k(model, bench, cfg, per_k, theta, dist)  # the setting meta-val chose per k
    else:
        chosen = head_init or (eval_cfg.head_init if eval_cfg is not None else None) or ckpt.get("head_init") or "meta"
        if chosen == "auto":
            chosen, head_scores = choose_head_init(model, bench, cfg, params=theta, dist=dist)
        cfg.head_init = chosen
        result = evaluate_kshot(model, bench, cfg, params=theta, dist=dist)
    result["iteration"] = int(ckpt["iteration"])
    result["checkpoint"] = ckpt.get("kind", which)
    result["head_scores"] = head_scores
    if sizes_line:
        result["task_sizes"] = sizes_line
    return result


def _chosen_per_k(ckpt: Mapping[str, Any]) -> dict[int, dict[str, Any]] | None:
    """``{k: setting}`` a checkpoint's card holds when its fine-tuning was chosen per k on meta-val
    (:mod:`croma.table_choice`), else None."""
    ft = (ckpt.get("serving") or {}).get("finetune") or {}
    if ft.get("chosen_on") != "meta_val" or not ft.get("per_k"):
        return None
    return {int(k): dict(v) for k, v in ft["per_k"].items()}


def _evaluate_per_k(model, bench, cfg: EvalConfig, per_k: Mapping[int, Mapping[str, Any]], theta, dist) -> dict[str, Any]:
    """:func:`evaluate_kshot` one k at a time (as ``croma benchmark`` meta-tests), each with the
    setting chosen for the nearest k (:func:`croma.runcard.nearest_k`, as :meth:`RunModel.setting_for`);
    retrieval once. Rows carry ``setting``."""
    from croma.runcard import nearest_k

    result: dict[str, Any] | None = None
    for i, k in enumerate(cfg.shots):
        near = nearest_k(per_k, int(k))
        st = per_k[near]
        one = replace(cfg, shots=[int(k)], head_init=st["head_init"], finetune=st["finetune"],
                      finetune_steps=int(st["finetune_steps"]), finetune_lr=float(st["finetune_lr"]),
                      retrieval=cfg.retrieval and i == 0)
        res = evaluate_kshot(model, bench, one, params=theta, dist=dist)
        res["rows"][0]["setting"] = (f"{st['head_init']}/{st['finetune_steps']}/{st['finetune_lr']:g}/{st['finetune']}"
                                     + ("" if near == int(k) else f" (k={near}'s choice: meta-val chose none for k={k})"))
        if result is None:
            result = dict(res, head_init="chosen per k on meta-val", finetune="as chosen per k")
        else:
            result["rows"].extend(res["rows"])
    assert result is not None
    return result


def fit_episode_sizes(bench: Any, cfg: EvalConfig, *, strict: bool = False) -> tuple[EvalConfig, str | None]:
    """Meta-test (or meta-val) episodes that the split's classes can fill (:mod:`croma.task_sizes`):
    a k fewer than ``ways`` classes can serve (k + 1 items) is dropped, the query count is lowered to
    what the largest kept k allows; a k is never lowered. ``strict``: as asked.

    Returns:
        ``(cfg', line)``: a changed copy and one line saying what changed, or ``(cfg, None)``.

    Raises:
        CromaError: no k can be served (the class counts named).
    """
    from croma.task_sizes import class_counts, fit_task_sizes

    if strict:
        return cfg, None
    split = cfg.split.replace("_", "-")
    sizes = fit_task_sizes({"meta_test": class_counts(bench, cfg.split)}, ways=cfg.ways, shots=1, queries=0,
                           test_shots=[int(k) for k in cfg.shots], test_queries=int(cfg.queries))
    if sizes.test_shots == [int(k) for k in cfg.shots] and sizes.test_queries == cfg.queries:
        return cfg, None
    notes = [f"asked {cfg.queries}"] if sizes.test_queries != cfg.queries else []
    notes += [f"k={d['k']} dropped: {d['why'].replace('meta-test', split)}" for d in sizes.dropped]
    line = (f"task sizes: {split} k={','.join(map(str, sizes.test_shots))} with {sizes.test_queries} "
            f"quer{'y' if sizes.test_queries == 1 else 'ies'} ({'; '.join(notes)})")
    return replace(cfg, shots=list(sizes.test_shots), queries=int(sizes.test_queries)), line
