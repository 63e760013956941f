"""The sections of a training configuration (:class:`croma.config.TrainConfig`: ``data``, ``inner``,
``outer``, ``eval``, ``run``; ``model`` is :class:`croma.model.ModelConfig`'s fields) and the flat
names of their settings (:data:`FLAT`, :data:`MODEL_FLAT`). Import them from :mod:`croma.config`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import torch

__all__ = ["DataConfig", "InnerLoopConfig", "OuterConfig", "MetaValConfig", "RunConfig", "SECTIONS", "FLAT", "MODEL_FLAT",
           "RUNTIME_FIELDS", "nest_model_settings", "plain"]


@dataclass
class DataConfig:
    """What to load. ``benchmark``: a registered data set (``synthetic`` for tests); ``features``:
    ``sequence`` (front-end output as is) or ``compact`` (n-gram / audio-statistics vectors);
    ``data_root``, ``cache_dir``, ``manifest``, ``source``, ``target``: passed to the loader;
    ``backbones``: ``{modality: backbone}`` frozen front-ends; ``audio_model``: local transformers
    audio directory; ``skip_bad``: leave out unreadable items; ``split_classes``: ``[TRAIN, VAL,
    TEST]`` class counts (None: by fraction, at least ``ways`` classes per split when possible)."""

    benchmark: str = "synthetic"
    features: str = "sequence"
    data_root: str | None = None
    cache_dir: str | None = None
    manifest: str | None = None
    source: str | None = None
    target: str | None = None
    backbones: dict[str, str] = field(default_factory=dict)
    audio_model: str | None = None
    skip_bad: bool = False
    split_classes: list[int] | None = None
    extra_modalities: bool = True  # a manifest's modalities besides source/target join alignment


@dataclass
class InnerLoopConfig:
    """The per-task inner loop: ``steps`` of ``optimizer`` (``sgd`` | ``adam``) at ``lr``;
    ``loop``: ``batched`` (vmap), ``sequential`` (the reference) or ``higher`` (the optional
    package); ``task_chunk``: tasks per batched chunk (chunks are summed in a fixed order, so
    results do not depend on the number of processes; 0: one chunk per family); ``compile``: run
    the batched step through ``torch.compile``."""

    steps: int = 5
    lr: float = 1e-3
    optimizer: str = "adam"
    loop: str = "batched"
    task_chunk: int = 32
    compile: bool = False


@dataclass
class OuterConfig:
    """The meta-batch and the outer algorithm. ``algorithm``: ``reptile`` | ``fomaml`` (see
    :mod:`croma.meta.outer`); ``iterations`` outer steps of ``meta_batch`` tasks; ``task_mix``:
    fraction of alignment tasks (the rest source classification) unless ``task_weights``
    (``{family: weight}``) is given; ``meta_lr`` -> ``meta_lr_final``: the outer step size, linear
    over the run; ``loss`` / ``loss_hp``: the alignment objective; ``ways``/``shots``/``queries``:
    classification episodes; ``align_batch``: pairs per alignment task; ``frozen``:
    parameter-name prefixes no task updates; ``strict_sizes``: task sizes exactly as given (else
    lowered to fit the data, :mod:`croma.task_sizes`)."""

    algorithm: str = "reptile"
    iterations: int = 1000
    meta_batch: int = 8
    task_mix: float = 0.5
    task_weights: dict[str, float] | None = None
    meta_lr: float = 1.0
    meta_lr_final: float = 0.0
    loss: str = "cwcl"
    loss_hp: dict[str, Any] = field(default_factory=dict)
    ways: int = 5
    shots: int = 5
    queries: int = 5
    align_batch: int = 32
    frozen: list[str] = field(default_factory=list)
    strict_sizes: bool = False


@dataclass
class MetaValConfig:
    """Meta-val during training: every ``every`` iterations (0: never), ``tasks`` episodes per k in
    ``shots`` with ``queries`` queries; fine-tuning (``finetune`` all | head, ``finetune_steps``,
    ``finetune_lr`` / ``finetune_optimizer``: None = the inner loop's); ``head_init`` meta | zero |
    prototype | auto (chosen on meta-val at the end); ``label_noise`` on support labels."""

    every: int = 100
    tasks: int = 8
    shots: list[int] = field(default_factory=lambda: [5])
    queries: int = 5
    finetune: str = "all"
    finetune_steps: int = 10
    finetune_lr: float | None = None
    finetune_optimizer: str | None = None
    head_init: str = "meta"
    label_noise: float = 0.0


@dataclass
class RunConfig:
    """The run: ``seed`` (model init, splits, every task), ``device`` (auto | cpu | cuda[:i]),
    ``checkpoint_dir`` (None: no files), ``checkpoint_every`` (0: only at the end),
    ``stop_after`` iterations (as if interrupted), ``time_budget_s`` of training."""

    seed: int = 0
    device: str = "cpu"
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    stop_after: int | None = None
    time_budget_s: float | None = None


SECTIONS: dict[str, type] = {"data": DataConfig, "inner": InnerLoopConfig, "outer": OuterConfig,
                             "eval": MetaValConfig, "run": RunConfig}

# flat name (CLI flag, pre-section key) -> (section, field)
_RENAMED = {
    ("inner", "steps"): "inner_steps", ("inner", "lr"): "inner_lr", ("inner", "optimizer"): "inner_optimizer",
    ("inner", "loop"): "inner_loop", ("inner", "compile"): "compile_inner",
    ("eval", "every"): "eval_every", ("eval", "tasks"): "eval_tasks", ("eval", "shots"): "eval_shots",
    ("eval", "queries"): "eval_queries", ("eval", "label_noise"): "val_label_noise",
}
FLAT: dict[str, tuple[str, str]] = {
    _RENAMED.get((sec, f.name), f.name): (sec, f.name) for sec, cls in SECTIONS.items() for f in fields(cls)
}

# the model section's settings by flat name (its ModelConfig fields but num_classes): ``hidden = 16``
MODEL_FLAT = ("embed_dim", "hidden", "encoders", "encoder_hp", "image_weights", "text_model", "reconstruction")
# flags whose name differs from their setting's flat name (--outer: a text ``outer`` is ``algorithm``)
_ALIASES = {"backbone": "backbones", "encoder": "encoders"}


def _flat_name(key: str, value: Any = None) -> str:
    return "algorithm" if key == "outer" and isinstance(value, str) else _ALIASES.get(key, key)


def nest_model_settings(d: Mapping[str, Any]) -> dict[str, Any]:
    """``d`` with its flat model settings (:data:`MODEL_FLAT`, ``encoder``) moved into ``model`` (over
    the ones there) and ``backbone`` renamed ``backbones``: a flat settings file for a config class
    without flat model names (``croma benchmark``'s)."""
    out = {_ALIASES.get(k, k): v for k, v in d.items() if _ALIASES.get(k, k) not in MODEL_FLAT}
    flat = {_ALIASES.get(k, k): v for k, v in d.items() if _ALIASES.get(k, k) in MODEL_FLAT}
    if flat:
        out["model"] = {**(d.get("model") if isinstance(d.get("model"), Mapping) else {}), **flat}
    return out


# Settings that may differ between an interrupted run and its --resume (they do not change results).
RUNTIME_FIELDS = frozenset({"device", "checkpoint_dir", "stop_after", "time_budget_s", "data_root", "cache_dir"})


def plain(value: Any) -> Any:
    """``value`` as plain types (dict/list/str/int/float/bool/None; tuples become lists; tensors
    are kept). Raises TypeError for other objects."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint (plain types and tensors only)")


def _section(cls: type, value: Any, where: str):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return copy.deepcopy(value)
    if isinstance(value, Mapping):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(f'{where}.{k}' for k in unknown)} "
                             f"(known: {', '.join(sorted(names))})")
        return cls(**copy.deepcopy(dict(value)))
    raise TypeError(f"configuration section {where!r} must be a mapping (got {type(value).__name__})")


def near_match(unknown, known) -> str:
    """`` (did you mean 'shots'?)`` for the first unknown setting name with a close known one, else ``""``."""
    import difflib

    for key in unknown:
        near = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
        if near:
            return f" (did you mean {near[0]!r}?)"
    return ""
