"""Training configuration: nested sections, defaults and validation in one place, strict files.

A :class:`TrainConfig` has six sections::

    TrainConfig(data=DataConfig(...),        # what to load and how to front-end it
                model={...},                 # croma.model.ModelConfig fields (num_classes = ways)
                inner=InnerLoopConfig(...),  # the per-task inner loop
                outer=OuterConfig(...),      # the meta-batch and the outer algorithm
                eval=MetaValConfig(...),     # meta-val episodes, fine-tuning, head choice
                run=RunConfig(...))          # seed, device, checkpoints, stopping

Every setting also has one flat name (:data:`FLAT`: ``inner_lr`` is ``inner.lr``), the name of
its CLI flag (``--inner-lr``) and of the key in configs written before the sections existed, so
``TrainConfig(inner_lr=3e-3)``, ``cfg.inner_lr`` and ``dataclasses.replace(cfg, inner_lr=...)``
keep working. :meth:`TrainConfig.from_dict` takes the nested form (``to_dict``'s output), the flat
form, or a mix, and rejects unknown keys naming them. :func:`croma.factory.load_config_file` reads a
JSON or TOML file, the ``config`` of a ``results.json``, or the ``config`` stored in a checkpoint.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

import torch

from croma.keyvalues import parse_key_values, parse_value  # noqa: F401 - re-exported (KEY=VALUE flags)

__all__ = [
    "DataConfig", "InnerLoopConfig", "OuterConfig", "MetaValConfig", "RunConfig", "TrainConfig",
    "FLAT", "SECTIONS", "RUNTIME_FIELDS", "parse_key_values", "parse_value", "plain",
]


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


@dataclass(init=False)
class TrainConfig:
    """Everything that defines a CROMA training run (sections above; stored in checkpoints).

    ``TrainConfig(inner=InnerLoopConfig(lr=3e-3), iterations=200)``: sections as dataclasses or
    dicts, plus any flat names (:data:`FLAT`), applied on top. Flat names read and write their
    section's field (``cfg.inner_lr is cfg.inner.lr``).
    """

    data: DataConfig
    model: dict[str, Any]
    inner: InnerLoopConfig
    outer: OuterConfig
    eval: MetaValConfig
    run: RunConfig

    def __init__(self, data: Any = None, model: Mapping[str, Any] | None = None, inner: Any = None,
                 outer: Any = None, eval: Any = None, run: Any = None, **flat: Any) -> None:  # noqa: A002
        if isinstance(outer, str):  # the --outer flag's name for the outer algorithm
            flat, outer = {"algorithm": outer, **flat}, None
        for name, value in (("data", data), ("inner", inner), ("outer", outer), ("eval", eval), ("run", run)):
            object.__setattr__(self, name, _section(SECTIONS[name], value, name))
        if model is not None and not isinstance(model, Mapping):
            raise TypeError(f"configuration section 'model' must be a mapping (got {type(model).__name__})")
        object.__setattr__(self, "model", copy.deepcopy(dict(model or {})))
        for key, value in flat.items():
            if _flat_name(key) not in FLAT and _flat_name(key) not in MODEL_FLAT:
                raise TypeError(f"TrainConfig got an unknown setting {key!r}")
            setattr(self, _flat_name(key), value)

    def __getattr__(self, name: str) -> Any:  # only for names that are not attributes: the flat aliases
        if name in FLAT:
            sec, f = FLAT[name]
            return getattr(object.__getattribute__(self, sec), f)
        if name in MODEL_FLAT:  # the model's setting, else ModelConfig's default
            from croma.model import ModelConfig

            model = object.__getattribute__(self, "model")
            return model[name] if name in model else getattr(ModelConfig(), name)
        raise AttributeError(f"'TrainConfig' object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in FLAT:
            sec, f = FLAT[name]
            setattr(getattr(self, sec), f, value)
        elif name in MODEL_FLAT:
            self.model[name] = copy.deepcopy(value)
        elif name in ("model",) or name in SECTIONS:
            object.__setattr__(self, name, value)
        else:
            raise AttributeError(f"'TrainConfig' has no setting {name!r}")

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """Nested plain-type dict (a checkpoint's and a results file's ``config``)."""
        return plain(asdict(self))

    def flat(self) -> dict[str, Any]:
        """``{flat name: value}`` of every setting, plus ``model``."""
        out = {k: copy.deepcopy(getattr(getattr(self, s), f)) for k, (s, f) in FLAT.items()}
        out["model"] = copy.deepcopy(self.model)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Rebuild from :meth:`to_dict` output, the flat form, or a mix of both.

        Raises:
            ValueError: a key that is neither a section nor a flat setting (named in the message);
                types and ranges are :meth:`check_types`' (and :meth:`validate`'s).
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"a training configuration must be a mapping (got {type(d).__name__})")
        flat = {_flat_name(k, v): v for k, v in d.items() if _flat_name(k, v) in FLAT or _flat_name(k) in MODEL_FLAT}
        unknown = sorted(k for k in d if k not in SECTIONS and k != "model" and _flat_name(k, d[k]) not in flat)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(map(repr, unknown))} in the training configuration")
        sections = {k: v for k, v in d.items() if (k in SECTIONS or k == "model") and _flat_name(k, v) not in flat}
        return cls(**sections, **flat)

    @staticmethod
    def flat_keys(d: Mapping[str, Any]) -> set[str]:
        """The flat names of the settings a (nested, flat or mixed) dict names; ``model`` included."""
        inverse = {v: k for k, v in FLAT.items()}
        out = set()
        for k, v in d.items():
            k = _flat_name(k, v)
            if k in SECTIONS and isinstance(v, Mapping):
                out.update(inverse[(k, f)] for f in v if (k, f) in inverse)
            elif k in FLAT or k == "model":
                out.add(k)
            elif k in MODEL_FLAT:
                out.add("model")
        return out

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with sections and/or flat settings changed (same as ``dataclasses.replace``)."""
        return TrainConfig(data=self.data, model=self.model, inner=self.inner, outer=self.outer, eval=self.eval,
                           run=self.run, **changes)

    # ------------------------------------------------------------------ checks
    def check_types(self, where: str | None = None) -> None:
        """Raise ValueError naming the setting (as its flag) when it has the wrong type (text where a
        count belongs, ``"no"`` for a true/false setting) or lies outside :data:`croma.bounds.BOUNDS`,
        the one table the flags use too (:func:`croma.bounds.check_train_types`)."""
        from croma.bounds import check_train_types

        check_train_types(self, FLAT, SECTIONS, where)

    def validate(self) -> None:
        """Raise ValueError naming the offending setting (as its CLI flag) when out of range."""
        from croma.evaluate import HEAD_INITS
        from croma.meta.inner import INNER_LOOPS, INNER_OPTIMIZERS
        from croma.meta.outer import OUTER_ALGORITHMS
        from croma.meta.tasks import FAMILIES

        def need(cond: bool, flag: str, what: str, value: Any) -> None:
            if not cond:
                raise ValueError(f"--{flag} must be {what} (got {value})")

        from croma.bounds import check_objective
        from croma.model import ModelConfig

        known = {f.name for f in fields(ModelConfig)} - {"num_classes"}
        unknown = sorted(set(self.model) - known) if isinstance(self.model, Mapping) else []
        need(not unknown, "model", f"settings among {', '.join(sorted(known))}", unknown)
        self.check_types()  # types and croma.bounds.BOUNDS: counts, rates, sizes (the flags' table)
        need(self.features in ("sequence", "compact"), "features", "sequence or compact", self.features)
        need(self.inner_optimizer in INNER_OPTIMIZERS, "inner-optimizer", "sgd or adam", self.inner_optimizer)
        need(self.inner_loop in INNER_LOOPS, "inner-loop", ", ".join(INNER_LOOPS), self.inner_loop)
        need(self.algorithm in OUTER_ALGORITHMS, "outer", " or ".join(OUTER_ALGORITHMS.names()), self.algorithm)
        need(self.head_init in HEAD_INITS + ("auto",), "head-init", "meta, zero, prototype or auto", self.head_init)
        need(self.finetune in ("all", "head"), "finetune", "all or head", self.finetune)
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device", "auto, cpu or cuda",
             self.device)
        need(bool(self.eval_shots), "eval-shots", "one or more integers >= 1", self.eval_shots)
        if self.finetune_optimizer is not None:
            need(self.finetune_optimizer in INNER_OPTIMIZERS, "finetune-optimizer", "sgd or adam",
                 self.finetune_optimizer)
        if self.task_weights is not None:
            bad = sorted(set(self.task_weights) - set(FAMILIES))
            need(not bad, "task-weights", f"over {', '.join(FAMILIES)}", bad)
            total = sum(self.task_weights.values())
            need(math.isfinite(total) and total > 0, "task-weights", "weights with a positive, finite sum",
                 self.task_weights)
        need(all(p for p in self.frozen), "frozen", "a list of parameter-name prefixes", self.frozen)
        need(self.split_classes is None or len(self.split_classes) == 3, "split-classes", "three class counts "
             "TRAIN,VAL,TEST", self.split_classes)
        check_objective(self.loss, self.loss_hp)  # each objective's own ranges (HyperRange)

    def check_memory(self) -> None:
        """Raise ValueError naming the sizes when the memory they imply (a lower bound:
        :func:`croma.bounds.train_memory`, :func:`croma.bounds.eval_memory`) exceeds this machine's."""
        from croma.bounds import check_memory, eval_memory, train_memory

        check_memory(*train_memory(self), self.device, "lower --meta-batch or --task-chunk (tasks run at once), "
                     "--embed-dim or --ways/--shots/--queries/--align-batch", what="training")
        if self.eval_every:
            check_memory(*eval_memory(self.eval_tasks, self.ways, max(self.eval_shots), self.eval_queries), self.device,
                         "lower --eval-tasks, --ways or --eval-shots", what="meta-val")
