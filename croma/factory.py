"""The composition layer: the only place that turns configurations into things.

* :func:`load_bench` — the benchmark a :class:`~croma.config.TrainConfig` names, with its
  front-ends and backbones; :func:`bench_to` moves it to a device;
* :func:`build_model` (alias :func:`build_from_config`) — the
  :class:`~croma.model.CrossModalModel`;
* :func:`build_objective` — the alignment objective module;
* :func:`eval_config_from` — the meta-val :class:`~croma.evaluate.EvalConfig` of a run;
* :func:`build_components` — all of the above for a trainer;
* :func:`resolve_device`, :func:`load_config_file` (a settings file, a results.json or a
  checkpoint's stored configuration).

Dependencies point down from here: the trainer and fit loop (:mod:`croma.learner`,
:mod:`croma.fit`), the baselines and the benchmark ask this module; it never imports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from croma.config import TrainConfig
from croma.errors import CromaError
from croma.evaluate import EvalConfig
from croma.keyvalues import MAX_DEPTH, NestingError, check_depth
from episodes.data import ModalityData, PreparedBenchmark

__all__ = [
    "resolve_device", "bench_to", "load_bench", "build_model", "build_from_config", "build_objective",
    "eval_config_from", "build_components", "Components", "load_config_file", "read_settings",
]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU -> CromaError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CromaError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def bench_to(bench: PreparedBenchmark, device: torch.device | str) -> PreparedBenchmark:
    """A shallow copy of ``bench`` whose feature tensors live on ``device`` (indices stay on CPU)."""
    data = {
        m: ModalityData(features=d.features.to(device), labels=d.labels, clusters=d.clusters, ids=d.ids)
        for m, d in bench.data.items()
    }
    return PreparedBenchmark(
        name=bench.name, source=bench.source, target=bench.target, class_names=bench.class_names,
        cluster_names=bench.cluster_names, data=data, pairs=bench.pairs, splits=bench.splits,
        align_source_rows=bench.align_source_rows, align_target_rows=bench.align_target_rows,
        classify_source_rows=bench.classify_source_rows, align_mode=bench.align_mode, info=bench.info,
    )


def load_bench(cfg: TrainConfig, *, progress: bool = False) -> PreparedBenchmark:
    """Load ``cfg.benchmark`` with its front-ends and backbones (:func:`croma.backbones.load_prepared`;
    splits seeded by ``cfg.seed``, sized for ``cfg.ways``-way tasks).

    Args:
        cfg: the training configuration (its ``data`` section and ``seed``, ``ways``).
        progress: show progress while features are built.

    Returns:
        The :class:`~episodes.data.PreparedBenchmark`.
    """
    from croma.backbones import load_prepared

    d = cfg.data
    return load_prepared(
        d.benchmark, compact=d.features == "compact", backbones=d.backbones,
        image_weights=cfg.model.get("image_weights"), text_model=cfg.model.get("text_model"),
        audio_model=d.audio_model, ways=cfg.ways, split_classes=d.split_classes,
        device=str(resolve_device(cfg.device)) if cfg.device != "cpu" else "cpu",
        data_root=d.data_root, manifest=d.manifest, source=d.source, target=d.target,
        seed=cfg.seed, cache_dir=d.cache_dir, progress=progress, skip_bad=d.skip_bad, fit_ways=not cfg.strict_sizes,
        **({} if d.extra_modalities or d.benchmark != "manifest" else {"extra": ()}),
    )


def build_model(cfg: TrainConfig, bench: PreparedBenchmark):
    """The :class:`croma.model.CrossModalModel` a config describes (seeded by ``cfg.seed``, on CPU).

    Args:
        cfg: the training configuration (its ``model`` section, ``ways``, ``seed``).
        bench: the prepared benchmark (its modalities' feature shapes and types choose the encoders).

    Returns:
        The model, its parameters freshly initialised.
    """
    from croma.model import ModelConfig
    from croma.model import build_model as _build

    mc = dict(cfg.model)
    mc["num_classes"] = cfg.ways
    names = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(mc) - names)
    if unknown:
        raise CromaError(f"unknown model setting(s) {', '.join(unknown)} in the configuration")
    if mc.get("encoders"):
        mc["encoders"] = _encoders_for(dict(mc["encoders"]), list(getattr(bench, "data", {}) or {}))
    return _build(ModelConfig(**mc), bench, seed=cfg.seed)


def _encoders_for(chosen: dict, mods: list[str]) -> dict:
    """``--encoder`` choices checked against the data's modalities (a kind, ``image``, covers its named
    ones, ``image:ct``; ``speech`` is ``audio``): one naming no modality of the data is refused."""
    from episodes.data import canonical_modality, modality_kind
    from episodes.errors import DataError

    kinds = {modality_kind(m) for m in mods}
    out = {}
    for key, name in chosen.items():
        m = key
        if key not in mods:
            try:
                m = canonical_modality(str(key))
            except DataError as exc:
                raise CromaError(f"--encoder {key}={name}: {exc}") from None
            if m not in mods and m not in kinds:
                raise CromaError(f"--encoder {key}={name}: the data has no {m} modality (it has {', '.join(mods)})")
        out[m] = name
    return out


build_from_config = build_model


def build_objective(cfg: TrainConfig) -> torch.nn.Module:
    """``croma.losses.get_loss(cfg.loss, **cfg.loss_hp)`` (ValueError naming an unknown
    hyper-parameter and the accepted ones)."""
    from croma.losses import get_loss

    return get_loss(cfg.loss, **dict(cfg.loss_hp))


def eval_config_from(cfg: TrainConfig, **overrides: Any) -> EvalConfig:
    """The meta-val :class:`EvalConfig` of a training config (fine-tuning settings, ways, seed)."""
    ev = cfg.eval
    head = ev.head_init if ev.head_init != "auto" else "meta"
    base = EvalConfig(
        shots=list(ev.shots), ways=cfg.ways, tasks=ev.tasks, queries=ev.queries, repeats=1,
        split="meta_val", head_init=head, finetune=ev.finetune, finetune_steps=ev.finetune_steps,
        finetune_lr=ev.finetune_lr if ev.finetune_lr is not None else cfg.inner.lr,
        finetune_optimizer=ev.finetune_optimizer or cfg.inner.optimizer, seed=cfg.seed,
        nearest_centroid=False, retrieval=False,
        inner_loop="sequential" if cfg.inner.loop == "higher" else cfg.inner.loop,
        label_noise=ev.label_noise,
    )
    for k, v in overrides.items():
        setattr(base, k, v)
    return base


@dataclass
class Components:
    """What a trainer runs on: the benchmark (on ``device``), the model, the objective (None when
    no alignment task is planned)."""

    bench: PreparedBenchmark
    model: torch.nn.Module
    loss_module: torch.nn.Module | None
    device: torch.device


def build_components(cfg: TrainConfig, bench: PreparedBenchmark | None = None, *,
                     model: torch.nn.Module | None = None, loss_module: torch.nn.Module | None = None,
                     progress: bool = False) -> Components:
    """Build (or take) the benchmark, model and objective of a run, on the run's device."""
    from croma.meta.outer import task_plan

    device = resolve_device(cfg.device)
    bench = bench if bench is not None else load_bench(cfg, progress=progress)
    from croma.task_sizes import fitted_ways

    model = model if model is not None else build_model(fitted_ways(cfg, bench), bench)  # its classifier's ways
    if loss_module is None and any(f in ("align", "align_multi") for f, _ in task_plan(cfg)):
        loss_module = build_objective(cfg)
    if loss_module is not None:
        loss_module = loss_module.to(device)
    return Components(bench=bench_to(bench, device), model=model.to(device), loss_module=loss_module, device=device)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The settings stored in ``path``: a JSON or TOML file of settings, a ``results.json`` (its
    ``config``), or a croma checkpoint ``.pt`` (its ``config``).

    Raises:
        CromaError: the file is missing, unreadable, or none of these (named in the message).
    """
    return read_settings(path)[0]


def _toml(path: Path) -> Any:
    """``tomllib`` (Python 3.11+), else the ``tomli`` package (declared for Python 3.10)."""
    try:
        import tomllib
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            raise CromaError(f"--config {path}: reading TOML on Python < 3.11 needs the tomli package: pip install "
                             "tomli (or write the settings as JSON)") from None
    return tomllib


def read_settings(path: str | Path) -> tuple[dict[str, Any], str]:
    """:func:`load_config_file` and what the file was: ``checkpoint`` (a ``.pt``), ``results``
    (a results.json) or ``file`` (a settings file), from one read of the file."""
    p = Path(path)
    if not p.is_file():
        raise CromaError(f"--config {p}: no such file (expected a JSON or TOML settings file, a results.json, "
                         f"or a croma checkpoint)")
    suffix = p.suffix.lower()
    kind = "checkpoint" if suffix == ".pt" else "file"
    try:
        if suffix == ".pt":
            from croma.checkpoint import load_checkpoint

            data: Any = load_checkpoint(p).get("config")
        elif suffix == ".toml":
            data = _toml(p).loads(p.read_bytes().decode("utf-8-sig"))  # utf-8-sig: a leading BOM (Notepad) is fine
        else:
            data = json.loads(p.read_text(encoding="utf-8-sig"))
        check_depth(data, f"--config {p}")
    except CromaError:
        raise
    except NestingError as exc:
        raise CromaError(str(exc)) from None
    except RecursionError:  # a parser's own recursion (tomllib, json, the unpickler) on absurd nesting
        raise CromaError(f"--config {p}: settings nested deeper than {MAX_DEPTH} levels (croma's settings need at "
                         "most 4)") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CromaError(f"--config {p}: cannot read it ({type(exc).__name__}: {exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and ("rows" in data or "format" in data):
        kind = "results" if "rows" in data else kind
        data = data["config"]  # a results.json
    if not isinstance(data, dict):
        raise CromaError(f"--config {p}: expected a table of settings (got {type(data).__name__})")
    return data, kind
