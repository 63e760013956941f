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
import inspect
import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Mapping, NoReturn

from croma.config_sections import (  # noqa: F401 - re-exported: croma.config is where they are imported from
    FLAT,
    MODEL_FLAT,
    RUNTIME_FIELDS,
    SECTIONS,
    DataConfig,
    InnerLoopConfig,
    MetaValConfig,
    OuterConfig,
    RunConfig,
    _flat_name,
    _section,
    near_match,
    nest_model_settings,
    plain,
)
from croma.keyvalues import parse_key_values, parse_value  # noqa: F401 - re-exported (KEY=VALUE flags)

__all__ = [
    "DataConfig", "InnerLoopConfig", "OuterConfig", "MetaValConfig", "RunConfig", "TrainConfig",
    "FLAT", "MODEL_FLAT", "SECTIONS", "RUNTIME_FIELDS", "parse_key_values", "parse_value", "plain",
]


class _Unset:
    """The default of :class:`TrainConfig`'s keyword settings: not given, the section's value stays."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()  # typed Any so that ``inner_lr: float = _UNSET`` reads as a float to type checkers
# TrainConfig's arguments that are not flat settings
_POSITIONAL = frozenset({"self", "data", "model", "inner", "outer", "eval", "run", "unknown"})


@dataclass(init=False)
class TrainConfig:
    """Everything that defines a CROMA training run (sections above; stored in checkpoints).

    ``TrainConfig(inner=InnerLoopConfig(lr=3e-3), iterations=200)``: sections as dataclasses or
    dicts, plus any flat names (:data:`FLAT`, :data:`MODEL_FLAT`), applied on top. Flat names read
    and write their section's field (``cfg.inner_lr is cfg.inner.lr``); every one is a keyword
    argument of the constructor, listed with its flag and default below.

    Example:
        >>> from croma import TrainConfig
        >>> cfg = TrainConfig(inner={"lr": 3e-3}, iterations=200, hidden=16)
        >>> cfg.inner_lr, cfg.outer.iterations, cfg.model
        (0.003, 200, {'hidden': 16})
        >>> cfg.replace(seed=3).run.seed
        3
    """

    data: DataConfig
    model: dict[str, Any]
    inner: InnerLoopConfig
    outer: OuterConfig
    eval: MetaValConfig
    run: RunConfig

    def __init__(
        self, data: DataConfig | Mapping[str, Any] | None = None, model: Mapping[str, Any] | None = None,
        inner: InnerLoopConfig | Mapping[str, Any] | None = None, outer: OuterConfig | Mapping[str, Any] | str | None = None,
        eval: MetaValConfig | Mapping[str, Any] | None = None, run: RunConfig | Mapping[str, Any] | None = None,  # noqa: A002
        *,
        # data
        benchmark: str = _UNSET, features: str = _UNSET, data_root: str | None = _UNSET, cache_dir: str | None = _UNSET,
        manifest: str | None = _UNSET, source: str | None = _UNSET, target: str | None = _UNSET,
        backbones: dict[str, str] = _UNSET, audio_model: str | None = _UNSET, skip_bad: bool = _UNSET,
        split_classes: list[int] | None = _UNSET, extra_modalities: bool = _UNSET,
        # inner
        inner_steps: int = _UNSET, inner_lr: float = _UNSET, inner_optimizer: str = _UNSET, inner_loop: str = _UNSET,
        task_chunk: int = _UNSET, compile_inner: bool = _UNSET,
        # outer
        algorithm: str = _UNSET, iterations: int = _UNSET, meta_batch: int = _UNSET, task_mix: float = _UNSET,
        task_weights: dict[str, float] | None = _UNSET, meta_lr: float = _UNSET, meta_lr_final: float = _UNSET,
        loss: str = _UNSET, loss_hp: dict[str, Any] = _UNSET, ways: int = _UNSET, shots: int = _UNSET,
        queries: int = _UNSET, align_batch: int = _UNSET, frozen: list[str] = _UNSET, strict_sizes: bool = _UNSET,
        # eval (meta-val)
        eval_every: int = _UNSET, eval_tasks: int = _UNSET, eval_shots: list[int] = _UNSET, eval_queries: int = _UNSET,
        finetune: str = _UNSET, finetune_steps: int = _UNSET, finetune_lr: float | None = _UNSET,
        finetune_optimizer: str | None = _UNSET, head_init: str = _UNSET, val_label_noise: float = _UNSET,
        # run
        seed: int = _UNSET, device: str = _UNSET, checkpoint_dir: str | None = _UNSET, checkpoint_every: int = _UNSET,
        stop_after: int | None = _UNSET, time_budget_s: float | None = _UNSET,
        # model (croma.model.ModelConfig but num_classes, which is ways)
        embed_dim: int = _UNSET, hidden: int = _UNSET, encoders: dict[str, str | None] = _UNSET,
        encoder_hp: dict[str, dict[str, Any]] = _UNSET, image_weights: str | None = _UNSET, text_model: str | None = _UNSET,
        reconstruction: bool = _UNSET,
        # the flags' names of two settings
        backbone: dict[str, str] = _UNSET, encoder: dict[str, str | None] = _UNSET,
        **unknown: NoReturn,  # any other name: a TypeError naming it (NoReturn: type checkers flag it too)
    ) -> None:
        """Build a configuration from sections and/or flat settings (flat ones win).

        Args:
            data: the ``data`` section (:class:`DataConfig` or a dict of its fields; None: defaults).
            model: :class:`croma.model.ModelConfig` fields but ``num_classes`` (a dict; None: ``{}``, the
                ModelConfig defaults).
            inner: the ``inner`` section (:class:`InnerLoopConfig` or a dict).
            outer: the ``outer`` section (:class:`OuterConfig` or a dict), or a text: the outer algorithm
                (``outer="fomaml"`` as ``--outer fomaml``).
            eval: the ``eval`` section, meta-val (:class:`MetaValConfig` or a dict).
            run: the ``run`` section (:class:`RunConfig` or a dict).
            benchmark: (``BENCH``) the registered data set to load (``croma.DATASETS``; ``synthetic`` for
                tests). Default ``'synthetic'``.
            features: (``--features``) ``sequence`` (byte ids, log-mel frames, images as the front-ends give
                them) or ``compact`` (n-gram and audio-statistics vectors for MLP encoders). Default ``'sequence'``.
            data_root: (``--data-root``) folder holding the data sets (None: ``$CROMA_DATA``). Default ``None``.
            cache_dir: (``--cache-dir``) feature cache folder (None: the default cache, ``croma cache info``).
                Default ``None``.
            manifest: (``--manifest``) JSONL manifest of ``benchmark="manifest"``. Default ``None``.
            source: (``--source``) the source modality of a manifest. Default ``None``.
            target: (``--target``) the target modality of a manifest. Default ``None``.
            backbones: (``--backbone``) ``{modality: backbone}`` frozen pretrained front-ends (embeddings
                cached; encoders become MLP adapters). Default ``{}``.
            audio_model: (``--audio-model``) local transformers audio model folder (``backbones={"audio": "hf"}``).
                Default ``None``.
            skip_bad: (``--skip-bad``) leave out unreadable image / audio files, saying how many. Default ``False``.
            split_classes: (``--split-classes``) ``[TRAIN, VAL, TEST]`` class counts of the seeded split (None:
                60/20/20 %, at least ``ways`` classes in meta-val and meta-test when possible). Default ``None``.
            extra_modalities: (``--no-extra-modalities`` sets False) a manifest's modalities besides source and
                target join the alignment tasks. Default ``True``.
            inner_steps: (``--inner-steps``) inner-loop steps per task. Default ``5``.
            inner_lr: (``--inner-lr``) inner-loop learning rate. Default ``0.001``.
            inner_optimizer: (``--inner-optimizer``) ``sgd`` or ``adam``. Default ``'adam'``.
            inner_loop: (``--inner-loop``) ``batched`` (vmap over tasks), ``sequential`` (the reference loop) or
                ``higher`` (the optional package). Default ``'batched'``.
            task_chunk: (``--task-chunk``) tasks per batched inner-loop chunk, summed in a fixed order so results
                do not depend on the number of processes (0: one chunk per task family). Default ``32``.
            compile_inner: (``--compile-inner``) run the batched inner step through ``torch.compile``.
                Default ``False``.
            algorithm: (``--outer``) the outer algorithm, ``reptile`` or ``fomaml`` (``croma.OUTER_ALGORITHMS``).
                Default ``'reptile'``.
            iterations: (``--iterations``) outer iterations (meta-batches). Default ``1000``.
            meta_batch: (``--meta-batch``) tasks per outer iteration. Default ``8``.
            task_mix: (``--task-mix``) fraction of alignment tasks in a meta-batch, the rest source
                classification (unless ``task_weights``). Default ``0.5``.
            task_weights: (``--task-weights``) ``{family: weight}`` over task families (``croma.FAMILIES``),
                replacing ``task_mix``; ``target_recon`` needs ``reconstruction=True``. Default ``None``.
            meta_lr: (``--meta-lr``) outer step size at the start. Default ``1.0``.
            meta_lr_final: (``--meta-lr-final``) outer step size at the end (linear in between). Default ``0.0``.
            loss: (``--loss``) the alignment objective (``croma.list_losses()``). Default ``'cwcl'``.
            loss_hp: (``--loss-hp``) the objective's hyper-parameters (``croma losses`` lists them).
                Default ``{}``.
            ways: (``--ways``) N, classes per classification task (the classifier's outputs). Default ``5``.
            shots: (``--shots``) K, labelled items per class in source classification tasks. Default ``5``.
            queries: (``--queries``) extra items per class in classification tasks. Default ``5``.
            align_batch: (``--align-batch``) cross-modal pairs per alignment task. Default ``32``.
            frozen: (no flag) parameter-name prefixes no task updates. Default ``[]``.
            strict_sizes: (``--strict-sizes``) task sizes exactly as given, an error when the data cannot fill
                them (else lowered to fit, saying so). Default ``False``.
            eval_every: (``--eval-every``) meta-val every N iterations (0: never). Default ``100``.
            eval_tasks: (``--eval-tasks``) meta-val episodes per k. Default ``8``.
            eval_shots: (``--eval-shots``) the k values of meta-val. Default ``[5]``.
            eval_queries: (no flag) query items per class in meta-val episodes. Default ``5``.
            finetune: (``--finetune``) what meta-val / meta-test fine-tune: ``all`` or ``head``. Default ``'all'``.
            finetune_steps: (``--finetune-steps``) fine-tuning steps at meta-val / meta-test. Default ``10``.
            finetune_lr: (``--finetune-lr``) fine-tuning learning rate (None: ``inner_lr``). Default ``None``.
            finetune_optimizer: (no flag) ``sgd`` or ``adam`` for fine-tuning (None: ``inner_optimizer``).
                Default ``None``.
            head_init: (``--head-init``) classifier initialisation for fine-tuning: ``meta``, ``zero``,
                ``prototype`` or ``auto`` (chosen on meta-val at the end). Default ``'meta'``.
            val_label_noise: (no flag) symmetric noise rate on meta-val support labels. Default ``0.0``.
            seed: (``--seed``) seed of the model's initialisation, the class split and every task. Default ``0``.
            device: (``--device``) ``cpu``, ``cuda``, ``cuda:I`` or ``auto`` (CUDA when available; the command
                line's default). Default ``'cpu'``.
            checkpoint_dir: (``--checkpoint-dir``) the run folder: last.pt, best.pt, metrics.csv (None: no
                files). Default ``None``.
            checkpoint_every: (``--checkpoint-every``) write last.pt every N iterations (0: only at the end).
                Default ``100``.
            stop_after: (no flag) stop after this many iterations, as if interrupted (None: at the end).
                Default ``None``.
            time_budget_s: (no flag) seconds of training before stopping (None: no limit). Default ``None``.
            embed_dim: (``--embed-dim``) joint embedding width. Default ``128``.
            hidden: (``--hidden``) hidden width of ``mlp`` and ``lstm`` encoders. Default ``128``.
            encoders: (``--encoder``) ``{modality: encoder}`` (``croma.ENCODERS``; missing: chosen from the
                feature shape). Default ``{}``.
            encoder_hp: (no flag) ``{modality: {setting: value}}`` extra encoder hyper-parameters. Default ``{}``.
            image_weights: (``--image-weights``) local ResNet-18 or EfficientNet-Lite0 weights file.
                Default ``None``.
            text_model: (``--text-model``) local transformers text model folder. Default ``None``.
            reconstruction: (``--reconstruction``) add a reconstruction head on the target modality (what
                ``target_recon`` tasks train). Default ``False``.
            backbone: the same as ``backbones`` (the flag's name).
            encoder: the same as ``encoders`` (the flag's name).

        Raises:
            TypeError: an unknown keyword (named), or a section that is not a mapping.
            ValueError: an unknown field in a section's dict (named).
        """
        given = {k: v for k, v in locals().items() if v is not _UNSET and k not in _POSITIONAL}
        if unknown:
            key = next(iter(unknown))
            raise TypeError(f"TrainConfig got an unknown setting {key!r}" + near_match([key], [*FLAT, *MODEL_FLAT]))
        if isinstance(outer, str):  # the --outer flag's name for the outer algorithm
            given, outer = {"algorithm": outer, **given}, None
        for name, value in (("data", data), ("inner", inner), ("outer", outer), ("eval", eval), ("run", run)):
            object.__setattr__(self, name, _section(SECTIONS[name], value, name))
        if model is not None and not isinstance(model, Mapping):
            raise TypeError(f"configuration section 'model' must be a mapping (got {type(model).__name__})")
        object.__setattr__(self, "model", copy.deepcopy(dict(model or {})))
        for key, value in given.items():
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
            raise ValueError(f"unknown setting(s) {', '.join(map(repr, unknown))} in the training configuration"
                             + near_match(unknown, [*FLAT, *MODEL_FLAT, *SECTIONS, "model"]))
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


def _default(cls: type, name: str) -> Any:
    f = next(f for f in fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]


def _init_signature() -> inspect.Signature:
    """``TrainConfig(...)``'s signature as ``help()``, ``inspect`` and notebooks show it: each flat
    setting with its real default (the code's default, :data:`_UNSET`, means "keep the section's")."""
    from croma.model import ModelConfig

    defaults = {name: _default(SECTIONS[sec], f) for name, (sec, f) in FLAT.items()}
    defaults.update({name: _default(ModelConfig, name) for name in MODEL_FLAT})
    sig = inspect.signature(TrainConfig.__init__)
    params = [p.replace(default=defaults.get(p.name, p.default), annotation=_Annotation(p.annotation))
              for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    return sig.replace(parameters=params, return_annotation=None)


class _Annotation(str):
    """An annotation's text that prints without quotes (``inner_lr: float = 0.001`` in ``help()``)."""

    def __repr__(self) -> str:
        return str(self)


TrainConfig.__init__.__signature__ = _init_signature()  # type: ignore[attr-defined]
