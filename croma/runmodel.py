"""A run folder as a self-contained model: :func:`load_model` -> embed / adapt / predict.

Every checkpoint a run writes carries a ``serving`` section (:func:`serving_card`): the modalities
and their input shapes, the class names and the class split, a data identity, the fitted
front-end of every modality (:mod:`episodes.transform`: n-gram settings, codebook,
standardisation statistics, image size, backbone name and weights digest) and the task sizes the
run used. With the checkpoint's configuration, meta-parameters and its fine-tuning per k (chosen on
meta-val as the table chose for a run trained from a table's results.json, :mod:`croma.table_choice`;
else the training setting), that is enough to use the run on new items without its training data::

    model = croma.load_model("runs/mine")              # best.pt of a run folder
    z = model.embed("image", ["a.png", "b.png"])       # [2, E] embeddings
    clf = model.adapt(support_values, support_labels)  # fine-tuned as the run's card says for that k
    labels, scores = clf.predict(query_values)         # predicted labels, [n, N] probabilities

Nothing here reads the training manifest or the feature cache; pretrained backbone weights are
still read from where they were installed (the same files the run recorded a digest of).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Sequence

import torch

from croma.adapted import AdaptedModel, Prediction, _EvalLike, _forward  # noqa: F401 - Prediction re-exported
from croma.errors import CromaError
from croma.runcard import (  # noqa: F401 - re-exported: the card's functions, by their old names
    SERVING_FORMAT,
    check_card,
    class_split_names,
    data_identity,
    finetune_choice,
    nearest_k,
    serving_card,
    split_changes,
)
from episodes.data import canonical_modality, modality_kind
from episodes.errors import DataError

__all__ = ["SERVING_FORMAT", "serving_card", "data_identity", "finetune_choice", "load_model", "RunModel",
           "AdaptedModel", "Prediction", "split_changes"]


# ---------------------------------------------------------------------- loading

@dataclass
class RunModel:
    """A trained run, ready to embed and adapt (:func:`load_model`).

    Attributes:
        path: the checkpoint file.
        config: the run's :class:`croma.config.TrainConfig`.
        model: the :class:`croma.model.CrossModalModel` (run functionally with ``theta``).
        theta: the meta-learned parameters ``{name: tensor}`` on ``device``.
        card: the serving section the checkpoint stored (:mod:`croma.runcard`: modalities, input
            shapes, front-end state, classes, split, data identity).
        transforms: ``{modality: FeatureTransform}``: raw values -> the encoder's input features.
        device: where ``model`` and ``theta`` live.
        iteration: the training iteration the checkpoint was written at.
        extra: free-form additions (empty when loaded).
        source, target: modality names; ``modalities``: every modality with an encoder.
        class_names, split: the training classes and their split (``{split: [names]}``).
        data: the training data's identity (:func:`data_identity`).
        finetune: the fine-tuning per k (:func:`finetune_choice`; ``chosen_on == "meta_val"`` when
            chosen on meta-val, :mod:`croma.table_choice`).
        task_sizes: the task sizes the run used (None when not recorded).
    """

    path: Path
    config: Any
    model: torch.nn.Module
    theta: dict[str, torch.Tensor]
    card: dict[str, Any]
    transforms: dict[str, Any]
    finetune: dict[str, Any]
    device: torch.device
    iteration: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # a summary: the dataclass default would print every tensor
        n = sum(int(v.numel()) for v in self.theta.values())
        k = ", ".join(str(x) for x in self.finetune.get("per_k", {})) or "-"
        how = (f"fine-tuning chosen on meta-val for k={k}" if self.finetune.get("chosen_on") == "meta_val"
               else "fine-tuning: the training setting for every k")
        sizes = "/".join(str(len(self.card.get("split", {}).get(s, []))) for s in ("meta_train", "meta_val", "meta_test"))
        return (f"RunModel(path={str(self.path)!r}, {self.source} -> {self.target}, "
                f"modalities={self.modalities}, classes {sizes} (meta-train/val/test), "
                f"{self.config.outer.ways}-way, iteration={self.iteration}, {n:,} parameters, "
                f"{how}, device={self.device})")

    @property
    def source(self) -> str:
        return str(self.card["source"])

    @property
    def target(self) -> str:
        return str(self.card["target"])

    @property
    def modalities(self) -> list[str]:
        return list(self.card["modalities"])

    @property
    def class_names(self) -> list[str]:
        return list(self.card["class_names"])

    @property
    def split(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.card["split"].items()}

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.card["data"])

    @property
    def sample_rate(self) -> int | None:
        """The rate (Hz) the audio front-end reads at (a bare waveform array is taken to be at it);
        None without an audio modality."""
        t = next((t for m, t in self.transforms.items() if modality_kind(m) == "audio"), None)  # or audio:<name>
        return None if t is None else int(t.frontend.sample_rate)

    @property
    def task_sizes(self) -> Any:
        return self.card.get("task_sizes")

    def _modality(self, modality: str) -> str:
        try:
            m = canonical_modality(modality)
        except DataError as exc:
            raise CromaError(f"--modality {modality}: {exc}") from None
        if m not in self.transforms:
            raise CromaError(f"{self.path}: the run has no {m} modality (it has {', '.join(self.transforms)})")
        return m

    def features(self, modality: str, values: Sequence[Any], *, ids: Sequence[str] | None = None) -> torch.Tensor:
        """The encoder inputs of ``values`` (text strings; image paths, PIL images or ``[H, W, 3]`` arrays:
        uint8, uint16 or floats in [0, 1]; audio paths or decoded waveforms),
        made by the run's fitted front-end: ``[n, *shape]`` on the run's device.

        Raises:
            CromaError: a modality the run lacks, no values, an unreadable item (names the file).
        """
        m = self._modality(modality)
        values = list(values)
        if not values:
            raise CromaError(f"no {m} items given")
        try:
            x, _ = self.transforms[m](values, ids=ids)
        except DataError as exc:
            raise CromaError(str(exc) + _not_a_path_hint(m, values, self.transforms)) from None
        want = tuple(self.card["inputs"][m]["shape"])
        if tuple(x.shape[1:]) != want:
            raise CromaError(f"{m} features of shape {tuple(x.shape[1:])}, the run's encoder takes {want}")
        return x.to(self.device)

    def embed(self, modality: str, values: Sequence[Any], *, ids: Sequence[str] | None = None,
              batch_size: int = 256) -> torch.Tensor:
        """Embeddings ``float [n, E]`` of ``values`` in the shared space (no gradient), from the
        meta-learned parameters."""
        m = self._modality(modality)
        x = self.features(m, values, ids=ids)
        return _forward(self.model, self.theta, lambda mod, v: mod.embed(m, v), x, batch_size)

    def setting_for(self, shots: int) -> dict[str, Any]:
        """The run's fine-tuning setting for ``shots`` examples per class (the nearest k the card has
        one for; ties go to the smaller k)."""
        per_k = {int(k): v for k, v in (self.finetune.get("per_k") or {}).items()}
        if not per_k:
            return dict(self.finetune["default"])
        near = nearest_k(per_k, shots)
        out = dict(per_k[near])
        if near != shots:  # e.g. 2 shots: meta-val chose for k=1, and its score is that k's
            out["chosen_for_k"] = near
        return out

    def adapt(self, values: Sequence[Any], labels: Sequence[Hashable], *, steps: int | None = None,
              lr: float | None = None, finetune: str | None = None, head_init: str | None = None,
              optimizer: str | None = None, ids: Sequence[str] | None = None) -> "AdaptedModel":
        """Fine-tune a copy of the meta-parameters on labelled target-modality examples.

        Args:
            values: the support items (the run's target modality).
            labels: one label per value (any hashable; classes are sorted by their text).
            steps: fine-tuning steps; with ``lr``, ``finetune``, ``head_init`` and ``optimizer``
                it overrides meta-val's choice for this k (:meth:`setting_for`, k = the
                smallest class's count); ``None`` keeps the choice.
            lr: fine-tuning learning rate.
            finetune: ``all`` (every parameter) or ``head`` (the classifier only).
            head_init: ``meta``, ``zero`` or ``prototype``. ``meta`` needs as many classes as
                the run's ways; with another count the prototype head is used.
            optimizer: ``sgd`` or ``adam``.
            ids: optional item ids, one per value, passed to the front-end.

        Returns:
            An :class:`AdaptedModel`; ``.setting`` says how it was fine-tuned: the fine-tuning
            fields, ``shots`` (the support set's smallest class; ``shots_max`` its largest when
            they differ), ``ways``, and ``chosen_for_k`` when meta-val's choice came from the
            nearest k the run has one for (its ``meta_val`` score is that k's).

        Raises:
            CromaError: fewer than 2 classes, labels and values of different lengths, bad settings.
        """
        values, labels = list(values), list(labels)
        return self._adapt(lambda: self.features(self.target, values, ids=ids), len(values), labels, steps=steps,
                           lr=lr, finetune=finetune, head_init=head_init, optimizer=optimizer)

    def adapt_features(self, x: torch.Tensor, labels: Sequence[Hashable], **settings: Any) -> "AdaptedModel":
        """:meth:`adapt` on encoder inputs already made by :meth:`features` (``[n, *shape]``), e.g.
        many support sets drawn from one featurised pool; ``settings`` as :meth:`adapt`'s."""
        return self._adapt(lambda: x.to(self.device), int(x.shape[0]), list(labels), **settings)

    def _adapt(self, make_x: Any, n: int, labels: list, *, steps: int | None = None, lr: float | None = None,
               finetune: str | None = None, head_init: str | None = None,
               optimizer: str | None = None) -> "AdaptedModel":
        from croma.finetune import _Episodes
        from croma.meta.inner import adapt

        if n != len(labels):
            raise CromaError(f"adapt: {n} support items but {len(labels)} labels")
        classes = sorted(set(labels), key=lambda c: (str(c), repr(c)))
        if len(classes) < 2:
            raise CromaError(f"adapt: the support set has {len(classes)} class ({', '.join(map(str, classes)) or 'none'}); "
                             "give labelled examples of at least 2 classes")
        counts = [labels.count(c) for c in classes]
        setting, ev = self._finetune_setting(len(classes), min(counts), steps=steps, lr=lr, finetune=finetune,
                                             head_init=head_init, optimizer=optimizer)
        xs = make_x()
        ys = torch.tensor([classes.index(c) for c in labels], dtype=torch.long, device=self.device)
        eps = _Episodes(self.model, self.target, ev, names=list(self.theta))
        b = {"xs": xs, "ys": ys}
        with torch.enable_grad():
            params = {**self.theta, **eps.head(self.theta, b)}
            train = {k: v for k, v in params.items() if eps.keep(k)}
            const = {k: v for k, v in params.items() if not eps.keep(k)}
            adapted, _ = adapt(eps._support_loss, train, const, b, eps.inner)
        final = {**const, **adapted}
        setting["shots"] = min(counts)  # the k whose meta-val choice was used
        if max(counts) != min(counts):
            setting["shots_max"] = max(counts)  # an unbalanced support set: its largest class
        setting["ways"] = len(classes)
        return AdaptedModel(run=self, params=final, classes=classes, setting=setting)

    def _finetune_setting(self, n_classes: int, k: int, *, steps: int | None = None, lr: float | None = None,
                          finetune: str | None = None, head_init: str | None = None,
                          optimizer: str | None = None) -> tuple[dict[str, Any], _EvalLike]:
        """The fine-tuning of ``n_classes``-way ``k``-shot support sets: meta-val's choice for ``k``
        (:meth:`setting_for`) with the given settings over it, checked; and its :class:`_EvalLike`."""
        from croma.evaluate import FINETUNE_MODES, HEAD_INITS
        from croma.meta.inner import InnerConfig

        setting = self.setting_for(k)
        for key, v in (("finetune_steps", steps), ("finetune_lr", lr), ("finetune", finetune),
                       ("head_init", head_init), ("finetune_optimizer", optimizer)):
            if v is not None:
                setting[key] = v
        if setting["head_init"] not in HEAD_INITS:
            raise CromaError(f"--head-init must be one of {', '.join(HEAD_INITS)} (got {setting['head_init']!r})")
        if setting["finetune"] not in FINETUNE_MODES:
            raise CromaError(f"--finetune must be all or head (got {setting['finetune']!r})")
        if not (isinstance(setting["finetune_steps"], int) and 0 <= setting["finetune_steps"] <= 100000):
            raise CromaError(f"--steps must be an integer in [0, 100000] (got {setting['finetune_steps']!r})")
        lr_v = setting["finetune_lr"]
        if not (isinstance(lr_v, (int, float)) and math.isfinite(lr_v) and lr_v > 0):
            raise CromaError(f"--lr must be a finite number > 0 (got {lr_v!r})")
        ways = int(self.theta["classifier.weight"].shape[0])
        if setting["head_init"] == "meta" and n_classes != ways:
            setting["head_init"] = "prototype"
            setting["note"] = (f"head init meta needs {ways} classes (the run's ways); {n_classes} given: "
                               "prototype head used")
        ev = _EvalLike(ways=n_classes, head_init=setting["head_init"], finetune=setting["finetune"],
                       finetune_steps=int(setting["finetune_steps"]), finetune_lr=float(lr_v),
                       finetune_optimizer=setting["finetune_optimizer"])
        try:
            InnerConfig(steps=ev.finetune_steps, lr=ev.finetune_lr, optimizer=ev.finetune_optimizer)
        except ValueError as exc:
            raise CromaError(str(exc)) from None
        return setting, ev


def load_model(run: str | Path, *, which: str = "best", device: str = "cpu") -> RunModel:
    """Load a run folder (or a ``.pt`` checkpoint) as a :class:`RunModel`, without its training data.

    Args:
        run: the run folder (``--checkpoint-dir`` of ``croma train``) or a checkpoint file.
        which: ``best`` (falls back to ``last.pt`` when meta-val never selected one) or ``last``.
        device: ``cpu``, ``cuda`` or ``auto``.

    Returns:
        The :class:`RunModel`: ``embed``, ``adapt`` -> ``predict``.

    Raises:
        CromaError: a missing / malformed checkpoint; one made before runs stored their front-end
            (one line saying what is missing); a pretrained backbone whose weights are not where
            the run's configuration says, or differ from the ones it was trained with.
    """
    from croma.backbones import build_embedders
    from croma.checkpoint import check_parameters, load_checkpoint, train_config
    from croma.factory import resolve_device
    from croma.meta.functional import load_parameters, meta_parameters
    from croma.model import ModelConfig, build_model
    from croma.runs import check_one_run, resolve_checkpoint  # runs never imports this module
    from episodes.transform import FeatureTransform

    path = resolve_checkpoint(run, which)
    ckpt = load_checkpoint(path)
    check_one_run(path, ckpt)  # last.pt / best.pt / metrics.csv of one run
    cfg = train_config(ckpt, path)
    card = ckpt.get("serving")
    if not isinstance(card, dict) or card.get("format") != SERVING_FORMAT:
        raise CromaError(f"{path} was written before croma stored a run's front-end and class split in its checkpoints "
                         "(no 'serving' section): retrain it with this version to use it on new items, or use croma "
                         "evaluate with its training data")
    check_card(card, path)
    dev = resolve_device(device)
    specs = {m: (tuple(card["inputs"][m]["shape"]), getattr(torch, card["inputs"][m]["dtype"])) for m in card["modalities"]}
    mc = dict(cfg.model)
    mc["num_classes"] = cfg.ways
    model = build_model(ModelConfig(**mc), specs, seed=cfg.seed, source=card["source"], target=card["target"])
    check_parameters(ckpt["model"], meta_parameters(model), path)
    load_parameters(model, ckpt["model"])
    model = model.to(dev).eval()
    theta = {k: v.to(dev) for k, v in ckpt["model"].items()}
    backbones = {}
    for m, st in card["transform"].items():
        step = next((s for s in st.get("steps", []) if s.get("op") == "embed"), None)
        if step is not None:
            backbones[m] = step["backbone"]
    embedders = build_embedders(backbones, image_weights=cfg.model.get("image_weights"),
                                text_model=cfg.model.get("text_model"), audio_model=cfg.data.audio_model,
                                device=str(dev)) if backbones else {}
    transforms = {}
    for m in card["modalities"]:
        try:
            transforms[m] = FeatureTransform(m, card["transform"].get(m), embedder=embedders.get(m))
        except DataError as exc:
            raise CromaError(f"{path}: {exc}") from None
    ft = card.get("finetune") if isinstance(card.get("finetune"), dict) else finetune_choice(cfg, ckpt.get("head_init"))
    return RunModel(path=path, config=cfg, model=model, theta=theta, card=card, transforms=transforms, finetune=ft,
                    device=dev, iteration=int(ckpt.get("iteration", 0)))



def _not_a_path_hint(modality: str, values: list, transforms: dict) -> str:
    """For image / audio items given as text that is no file (``"a grey heron"``, not a path): what the
    modality takes, and the run's text modality when it has one (``""`` otherwise)."""
    import os

    text = [v for v in values if isinstance(v, str)]
    if modality_kind(modality) == "text" or not text or any(os.path.splitext(v)[1] or os.path.exists(v) for v in text):
        return ""
    texts = [m for m in transforms if modality_kind(m) == "text"]
    named = "" if not texts or texts[0] == "text" else f" {texts[0]}"
    other = f" (the run's text modality{named} takes strings)" if texts else ""
    return f"; {modality} items are file paths or decoded arrays, and {text[0]!r} looks like text{other}"
