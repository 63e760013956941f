"""What a ``croma benchmark`` run is: :class:`BenchmarkConfig` (its settings, checked in one place)
and the :data:`PRESETS` (budgets, front-ends, per-method hyper-parameters chosen on meta-val)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

__all__ = ["PRESETS", "QUICK_METHODS", "METHOD_HP_KEYS", "BenchmarkConfig", "seeds_of"]

# Presets. Budgets are optimiser steps per trained method (see croma.baselines.common), the same
# for every method; nothing depends on timing. ``quick`` is the main job (make demo): 600 meta-test
# episodes per (method, k), the same episodes for every method. ``paper`` uses sequence encoders
# and paper-scale budgets (hours on a CPU). ``method_hp``: each method's own hyper-parameters,
# chosen on meta-val with the same number of trials per method by
# ``experiments/tools/tune_methods.py`` (its command and output: experiments/results/tuning_quick.json).
# Every method of the paper's text -> speech block that applies (issue 22): the four shared-body
# domain-adaptation methods and both oracles (Reptile ``oracle`` and ``shared-target-labels``, the two
# that meta-train on target labels; the table's #target samples(labels) column shows it).
QUICK_METHODS = ["pretrain", "align-classify", "align-meta-classify", "croma", "oracle", "unsup-meta",
                 "shared", "shared-align", "shared-confusion", "shared-target-labels"]

# BenchmarkConfig settings a results file must not choose on another machine (paths, where to write)
LOCAL_SETTINGS = ("data_root", "cache_dir", "manifest", "out", "progress", "resume")

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "frontend": "compact",
        "budget_steps": 3000,
        # 3 training seeds x the same 200 meta-test episodes per k: the interval covers seed and
        # episode variance (two-level bootstrap, croma.stats), 600 paired evaluations per (method, k)
        "train_seeds": 3,
        "repeats": 1,
        "eval_tasks": 200,
        "methods": QUICK_METHODS,
        "train": dict(
            loss="cwcl", meta_batch=8, task_mix=0.5, inner_steps=5, inner_lr=3e-3, inner_optimizer="adam",
            meta_lr=1.0, meta_lr_final=0.0, shots=5, queries=5, align_batch=32, eval_tasks=30, eval_shots=[1, 5],
            eval_queries=5, finetune="all", finetune_steps=10, finetune_lr=1e-3,
            model=dict(embed_dim=128, hidden=256),
        ),
        "knobs": dict(val_episodes=100, val_checks=6, finetune_grid=[0, 25], finetune_lr_grid=[1e-3],
                      finetune_mode_grid=["all", "head"], ordinary_lr=1e-3, ordinary_batch=64),
        # chosen on udhr-speech meta-val, 4 trials per method, by
        #   python experiments/tools/tune_methods.py --preset quick \
        #       --methods croma,oracle,unsup-meta,align-classify,align-meta-classify --out experiments/results/tuning_quick_main.json
        #   python experiments/tools/tune_methods.py --preset quick \
        #       --methods shared,shared-align,shared-confusion,shared-target-labels --out experiments/results/tuning_quick_shared.json
        "method_hp": {
            "croma": {"inner_lr": 3e-3, "task_mix": 0.75},
            "oracle": {"inner_lr": 3e-3, "meta_lr": 1.0},
            "unsup-meta": {"inner_lr": 3e-3, "meta_lr": 1.0},
            "align-classify": {"align_weight": 1.0, "ordinary_lr": 1e-3},
            "align-meta-classify": {"inner_lr": 1e-3, "ordinary_lr": 1e-3},
            "shared": {"ordinary_lr": 3e-4},
            "shared-align": {"align_weight": 1.0, "ordinary_lr": 1e-3},
            "shared-confusion": {"confusion_weight": 0.01, "ordinary_lr": 1e-3},
            "shared-target-labels": {"ordinary_lr": 3e-4},
        },
    },
    "paper": {
        "frontend": "sequence",
        "budget_steps": 100000,
        "train_seeds": 1,
        "repeats": 3,
        "eval_tasks": 200,
        "methods": None,
        "train": dict(
            loss="cwcl", meta_batch=16, task_mix=0.5, inner_steps=5, inner_lr=1e-3, inner_optimizer="adam",
            meta_lr=1.0, meta_lr_final=0.0, shots=5, queries=5, align_batch=64, eval_tasks=30, eval_shots=[1, 5],
            eval_queries=5, finetune="all", finetune_steps=20, finetune_lr=1e-3,
            model=dict(embed_dim=128, hidden=256),
        ),
        "knobs": dict(val_episodes=100, val_checks=20, finetune_grid=[0, 10, 25, 50], finetune_lr_grid=[1e-3, 3e-3],
                      finetune_mode_grid=["all", "head"], ordinary_lr=1e-3, ordinary_batch=64),
        "method_hp": {},
    },
}

# The settings each built-in method reads from its ``method_hp`` (``MethodContext.hp``: the Reptile
# settings through ``method_train``, the ordinary-training ones through ``knob``; see
# croma/baselines). ``--method-hp`` refuses other keys for these methods, since they would change
# nothing; a method registered elsewhere (a plugin) takes any key.
_REPTILE = ("inner_lr", "meta_lr")
_ORDINARY = ("ordinary_lr", "ordinary_batch")
_OBJECTIVE = ("loss", "loss_hp")
METHOD_HP_KEYS: dict[str, tuple[str, ...]] = {
    "pretrain": (),
    "croma": (*_REPTILE, "task_mix", *_OBJECTIVE),
    "oracle": (*_REPTILE, *_ORDINARY),  # ordinary_*: the --oracle-warm-start phase
    "unsup-meta": _REPTILE,
    "align-classify": ("align_weight", *_ORDINARY, *_OBJECTIVE),
    "align-meta-classify": (*_REPTILE, *_ORDINARY, *_OBJECTIVE),
    "shared": _ORDINARY,
    "shared-align": ("align_weight", *_ORDINARY, *_OBJECTIVE),
    "shared-confusion": ("confusion_weight", *_ORDINARY),
    "shared-target-labels": _ORDINARY,
}


# BenchmarkConfig fields named by another flag in errors; --method-hp settings with a BOUNDS entry (their type)
_FLAGS = {"backbones": "--backbone", "progress": "--quiet", "model": "--model"}
_METHOD_HP_BOUNDS = {"inner_lr": float, "meta_lr": float, "ordinary_lr": float, "align_weight": float,
                     "confusion_weight": float, "task_mix": float, "ordinary_batch": int}


def _check_method_hp(cfg: "BenchmarkConfig") -> None:
    """Raise ValueError naming ``--method-hp`` when ``cfg.method_hp`` names an unknown method, a
    setting the method does not read, or a value out of range."""
    from croma.baselines import list_methods
    from croma.losses import get_loss, list_losses

    hp = cfg.method_hp
    if not isinstance(hp, dict) or not all(isinstance(m, str) and isinstance(v, dict) for m, v in hp.items()):
        raise ValueError(f"--method-hp must be {{method: {{setting: value}}}} (got {hp!r})")
    known = list_methods()
    for method, settings in hp.items():
        if method not in known:
            raise ValueError(f"--method-hp: unknown method {method!r} (known: {', '.join(known)})")
        allowed = METHOD_HP_KEYS.get(method)
        for key, v in settings.items():
            flag = f"--method-hp {method}.{key}"
            if not isinstance(key, str) or (allowed is not None and key not in allowed):
                takes = ", ".join(sorted(allowed or ())) or "no settings"
                raise ValueError(f"--method-hp: {method} has no setting {key!r} (it takes {takes})")
            number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if key in ("inner_lr", "meta_lr", "ordinary_lr") and not (number and v > 0):
                raise ValueError(f"{flag} must be a finite number > 0 (got {v!r})")
            if key in ("align_weight", "confusion_weight") and not (number and v >= 0):
                raise ValueError(f"{flag} must be a finite number >= 0 (got {v!r})")
            if key == "task_mix" and not (number and 0 <= v <= 1):
                raise ValueError(f"{flag} must be in [0, 1] (got {v!r})")
            if key == "ordinary_batch" and not (isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 10**6):
                raise ValueError(f"{flag} must be an integer in [2, 1000000] (got {v!r})")
            if key == "loss" and v not in list_losses():
                raise ValueError(f"{flag} must be one of {', '.join(list_losses())} (got {v!r})")
            if key == "loss_hp" and not (isinstance(v, dict) and all(isinstance(k, str) for k in v)):
                raise ValueError(f"{flag} must be an object of KEY: VALUE settings (got {v!r})")
        if "loss" in settings or "loss_hp" in settings:  # the objective this method will build
            preset = PRESETS[cfg.preset]
            tuned = preset.get("method_hp", {}).get(method, {})
            loss = settings.get("loss", tuned.get("loss", cfg.loss or preset["train"]["loss"]))
            loss_hp = {**preset["train"].get("loss_hp", {}), **(cfg.loss_hp or {}),
                       **settings.get("loss_hp", tuned.get("loss_hp", {}))}
            try:
                get_loss(loss, **loss_hp)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"--method-hp {method}: {exc}") from None


@dataclass
class BenchmarkConfig:
    """A `croma benchmark` run (field names follow the CLI flags; ``None``: the preset's value).

    Attributes:
        benchmark: the registered data set (``BENCH``).
        methods: the methods to run (``--methods``; None: the preset's methods that apply).
        shots: the k values of meta-test (``--shots``).
        repeats: meta-test repeats with different episode seeds (``--repeats``).
        ways: N, classes per episode (``--ways``).
        eval_tasks: meta-test episodes per repeat (``--eval-tasks``).
        queries: query items per class in meta-test episodes.
        loss: the alignment objective (``--loss``).
        label_noise: symmetric noise rate on target support labels (``--label-noise``).
        preset: ``quick`` or ``paper`` (:data:`PRESETS`: budgets, front-ends, tuned settings).
        budget_steps: optimiser steps per trained method, the same for every method (``--budget-steps``).
        budget_seconds: wall-clock training budget per method instead of steps (``--budget-seconds``;
            exploration only: results then depend on the machine's load).
        train_seeds: train each method this many times, seeds ``seed, seed+1, ...`` (``--train-seeds``;
            None: the preset's, quick 3, paper 1).
        jobs: worker processes the (method, training seed) runs are spread over (``--jobs``; None:
            ``$CROMA_JOBS``, else the CPU cores this process may use; at most one per run, 1 on a GPU). Every run uses one
            thread wherever it runs, so the numbers do not depend on ``jobs``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:I`` (``--device``).
        seed: the base seed (``--seed``; the training runs use ``seed, seed+1, ...``).
        out: output folder for results.json / .csv / .png (``--out``; None: no files).
        data_root: folder holding the data sets (``--data-root``; None: ``$CROMA_DATA``).
        cache_dir: feature cache folder (``--cache-dir``).
        manifest: JSONL manifest of ``benchmark="manifest"`` (``--manifest``).
        source: the source modality of a manifest (``--source``).
        target: the target modality of a manifest (``--target``).
        oracle_warm_start: a supervised warm start for the oracle (``--oracle-warm-start``).
        progress: show progress (``--quiet`` turns it off).
        method_hp: ``{method: {setting: value}}`` merged over the preset's tuned ones (``--method-hp``;
            :data:`METHOD_HP_KEYS`: the settings each method reads).
        backbones: ``{modality: backbone}`` frozen pretrained front-ends (``--backbone``).
        model: :class:`croma.model.ModelConfig` settings merged over the preset's (``--encoder``,
            ``--embed-dim``, ``--hidden``, ``--image-weights``, ``--text-model``).
        audio_model: local transformers audio model folder (``--audio-model``).
        skip_bad: leave out unreadable image / audio files, saying how many (``--skip-bad``).
        split_classes: ``[TRAIN, VAL, TEST]`` class counts of the split (``--split-classes``).
        extra_modalities: a manifest's other modalities join the alignment tasks
            (``--no-extra-modalities`` turns it off).
        finetune_modes: what meta-val may choose to fine-tune at meta-test, ``all`` and / or ``head``
            (``--finetune-modes``).
        val_episodes: meta-val episodes each candidate fine-tuning setting is scored on, per k,
            when a run chooses its meta-test setting (``--val-episodes``; default: the preset's, 100).
        val_halving: compare those candidates by successive halving (``--val-halving``,
            :func:`croma.evaluate.successive_halving`): most are scored on a prefix of the episodes;
            the choice can differ from scoring every candidate on every episode.
        loss_hp: the objective's hyper-parameters (``--loss-hp``).
        task_weights: ``{family: weight}`` meta-batch mix of the Reptile methods (``--task-weights``).
        compile_inner: the Reptile methods' batched inner step through ``torch.compile``
            (``--compile-inner``).
        strict_sizes: task sizes exactly as asked, an error when the data cannot fill them
            (``--strict-sizes``).
        resume: reuse the (method, training seed) runs an earlier run with the same settings
            finished in ``out`` (``OUT/units/``, :mod:`croma.unit_store`) and run only the rest
            (``--resume``; needs ``out``).
    """

    benchmark: str = "udhr-speech"
    methods: list[str] | None = None
    shots: list[int] = field(default_factory=lambda: [1, 5, 10])
    repeats: int | None = None
    ways: int = 5
    eval_tasks: int | None = None
    queries: int = 5
    loss: str | None = None
    label_noise: float = 0.0
    preset: str = "quick"
    budget_steps: int | None = None
    budget_seconds: float | None = None
    train_seeds: int | None = None
    jobs: int | None = None
    device: str = "auto"
    seed: int = 0
    out: str | None = "runs/benchmark"
    data_root: str | None = None
    cache_dir: str | None = None
    manifest: str | None = None
    source: str | None = None
    target: str | None = None
    oracle_warm_start: bool = False
    progress: bool = True
    # per-method hyper-parameters ({method: {setting: value}}, --method-hp), merged key by key over
    # the preset's method_hp for that method (croma.benchmark._method_hp); METHOD_HP_KEYS: the keys
    method_hp: dict[str, dict[str, Any]] | None = None
    # front-ends and model (the flags croma train shares): {modality: backbone}; ModelConfig
    # overrides merged over the preset's (encoders, embed_dim, hidden, image_weights, text_model)
    backbones: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    audio_model: str | None = None
    skip_bad: bool = False
    split_classes: list[int] | None = None
    extra_modalities: bool = True
    # fine-tuning modes meta-val may choose for meta-test (None: the preset's; ["head"]: never the
    # whole encoder, which is what makes --preset paper's evaluation slow on a CPU)
    finetune_modes: list[str] | None = None
    # meta-val episodes per candidate fine-tuning setting and k (None: the preset's val_episodes knob, 100)
    val_episodes: int | None = None
    # choose the meta-test setting by successive halving of the candidates (the val_halving knob)
    val_halving: bool = False
    # the alignment objective's hyper-parameters and the meta-batch's task families (Reptile methods)
    loss_hp: dict[str, Any] = field(default_factory=dict)
    task_weights: dict[str, float] | None = None
    # the Reptile methods' batched inner step through torch.compile (TrainConfig.compile_inner):
    # faster per step after a one-off compile per chunk shape; rounding differs from eager
    compile_inner: bool = False
    # task sizes exactly as asked (the preset's meta-training and meta-val sizes, --shots, --queries):
    # an error when the data cannot fill them, instead of lowered to fit (croma.task_sizes)
    strict_sizes: bool = False
    # continue an interrupted run: reuse the finished units in OUT/units (croma.unit_store)
    resume: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the flag when a setting is out of range (the one place the
        benchmark's ranges are checked; the CLI calls this before any work)."""
        from croma.bounds import check_dataclass, check_memory, check_objective, check_value, eval_memory
        from croma.config import TrainConfig
        from croma.model import ModelConfig

        # types and croma.bounds.BOUNDS, as for the flags and TrainConfig; --queries: at least one
        check_dataclass(self, flags=_FLAGS, bounds={"queries": "eval_queries"})
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)} (got {self.preset!r})")
        if self.resume and not self.out:
            raise ValueError("--resume needs --out: the folder whose finished runs (OUT/units/) it continues from")
        if not self.shots:
            raise ValueError(f"--shots must be one or more integers >= 1 (got {self.shots})")
        if self.methods is not None and not self.methods:
            raise ValueError("--methods must name one or more methods (got an empty list)")
        if self.methods is not None and self.methods != ["all"]:
            from croma.baselines import list_methods
            from croma.config import near_match

            known = list_methods()
            unknown = [m for m in self.methods if m not in known]
            if unknown:
                raise ValueError(f"--methods: unknown method {unknown[0]!r}{near_match(unknown, known)}; available: "
                                 f"{', '.join(known)}")
        if self.finetune_modes is not None and (not self.finetune_modes
                                                or any(m not in ("all", "head") for m in self.finetune_modes)):
            raise ValueError(f"--finetune-modes must be all, head or all,head (got {self.finetune_modes})")
        if self.split_classes is not None and len(self.split_classes) != 3:
            raise ValueError(f"--split-classes must be three class counts TRAIN,VAL,TEST (got {self.split_classes})")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"--device must be auto, cpu or cuda (got {self.device!r})")
        unknown = sorted(set(self.model) - {f.name for f in fields(ModelConfig)} | ({"num_classes"} & set(self.model)))
        if unknown:
            raise ValueError(f"--model: unknown setting(s) {', '.join(unknown)}")
        check_dataclass({k: v for k, v in self.model.items()}, cls=ModelConfig, flags={"encoders": "--encoder"})
        if self.task_weights is not None:
            from croma.meta.tasks import FAMILIES

            bad = sorted(set(self.task_weights) - set(FAMILIES))
            total = sum(self.task_weights.values())
            if bad or not (math.isfinite(total) and total > 0):
                raise ValueError(f"--task-weights must be weights over {', '.join(FAMILIES)} with a positive, finite "
                                 f"sum (got {self.task_weights})")
        preset = PRESETS[self.preset]
        check_objective(self.loss or preset["train"]["loss"], {**preset["train"].get("loss_hp", {}), **self.loss_hp})
        if self.method_hp is not None:
            _check_method_hp(self)
            for method, settings in self.method_hp.items():
                for key, v in settings.items():
                    if key in _METHOD_HP_BOUNDS:
                        check_value(v, _METHOD_HP_BOUNDS[key], f"--method-hp {method}.{key}", key)
        # memory the sizes imply (a lower bound), training and meta-test, before any method trains
        tr = dict(preset["train"])
        train = TrainConfig(ways=self.ways, device=self.device, **{**tr, "model": {**tr.get("model", {}), **self.model}})
        train.check_memory()
        tasks = self.eval_tasks if self.eval_tasks is not None else int(preset["eval_tasks"])
        check_memory(*eval_memory(tasks, self.ways, max(self.shots), self.queries), "cpu",
                     "lower --eval-tasks, --ways, --shots or --queries", what="meta-test")

    def resolved_seeds(self) -> int:
        """The training seeds this run uses (``train_seeds`` or the preset's)."""
        return seeds_of(self, PRESETS.get(self.preset, {}))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BenchmarkConfig":
        """Rebuild from ``asdict`` output (results.json's ``config.benchmark_config``) or a settings
        dict, nested or flat like ``croma train``'s (``hidden``, ``encoder``, ``backbone`` ... move
        into ``model`` / ``backbones``: :func:`croma.config.nest_model_settings`).

        Raises:
            ValueError: an unknown key (named).
        """
        from croma.config import nest_model_settings

        d = nest_model_settings(d)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            from croma.config import near_match

            raise ValueError(f"unknown benchmark setting(s) {', '.join(map(repr, unknown))}{near_match(unknown, names)} "
                             f"(known: {', '.join(sorted(names))})")
        return cls(**dict(d))


def seeds_of(cfg: "BenchmarkConfig", preset: Mapping[str, Any]) -> int:
    """Training seeds of a run: ``cfg.train_seeds`` when given, else the preset's (1 when it has none)."""
    return int(cfg.train_seeds) if cfg.train_seeds is not None else int(preset.get("train_seeds", 1))
