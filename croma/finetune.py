"""Batched k-shot fine-tuning of meta-parameters over many episodes at once.

:class:`_Episodes` holds the per-task functions of one evaluation (:func:`croma.evaluate.evaluate_kshot`):
the classifier head a task starts from (``meta`` | ``zero`` | ``prototype`` heads: rows =
normalised support class means), fine-tuning on the support set and query accuracy, and the
nearest-centroid diagnostic — either a chunk of episodes as one vmapped computation
(``batched``) or one task at a time (``sequential``, the reference). Settings come from a
:class:`croma.evaluate.EvalConfig` (this module does not import :mod:`croma.evaluate`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from croma.meta.functional import FunctionalModel, Params
from croma.meta.inner import InnerConfig, adapt, run_batched

__all__ = ["CHUNK", "target_param_names"]


def target_param_names(model: nn.Module, target: str, names: Sequence[str]) -> set[str]:
    """Names among ``names`` (meta-parameter names) of tensors the target encoder uses.

    A parameter shared between modules (e.g. one encoder body tied across modalities) is listed
    by ``named_parameters`` under its first name only, which may be the *source* encoder's; this
    finds it through every alias, so fine-tuning "the target encoder" includes a shared body.
    """
    mine = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n.startswith(f"encoders.{target}.")}
    by_id = {n: id(p) for n, p in model.named_parameters()}
    return {n for n in names if by_id.get(n) in mine}


# Episodes fine-tuned together in one batched computation: bounds memory (~T x parameters x 5
# tensors) and keeps results independent of how many episodes a call holds.
CHUNK = 50


class _Episodes:
    """The per-task functions of one evaluation.

    Two paths give the same numbers up to rounding: ``batched`` runs a chunk of episodes as one
    computation per fine-tuning step (:func:`croma.meta.inner.run_batched`: vmapped gradients,
    in-place fused Adam on the chunk's ``[T, ...]`` copies); ``sequential`` (the reference) runs
    :meth:`finetune_accuracy` (a pure per-task function built on :func:`croma.meta.inner.adapt`)
    one task at a time. When the embedding stays fixed (``finetune="head"`` or 0 steps) the
    target items are embedded once per call and episodes only index those embeddings.

    ``chunk``: episodes per batched computation (default :data:`CHUNK`; per-episode results do not
    depend on it). ``compile``: the batched fine-tuning step through ``torch.compile``
    (:class:`croma.meta.inner.InnerConfig` ``compile``; opt-in, ``croma bench eval --compile``).
    """

    def __init__(
        self, model: nn.Module, target: str, cfg: Any, names: Sequence[str] | None = None, *, chunk: int = CHUNK,
        compile: bool = False,
    ) -> None:
        self.fm = FunctionalModel(model)
        self.target = target
        self.cfg = cfg
        self.chunk = int(chunk)
        self.inner = InnerConfig(steps=cfg.finetune_steps, lr=cfg.finetune_lr, optimizer=cfg.finetune_optimizer,
                                 compile=bool(compile))
        names = list(names) if names is not None else [n for n, _ in model.named_parameters()]
        if cfg.finetune == "head":
            keep = {n for n in names if n.startswith("classifier.")}
        else:
            keep = target_param_names(model, target, names) | {n for n in names if n.startswith(("align.", "classifier."))}
        self.keep_names = keep
        self.keep = lambda name: name in keep
        self.frozen_embedding = cfg.finetune == "head" or cfg.finetune_steps == 0

    def _embed(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return self.fm(params, lambda m, v: m.embed(self.target, v), x)

    def _support_loss(self, params: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits = self.fm(params, lambda m, v: m.classify(m.embed(self.target, v)), b["xs"])
        return F.cross_entropy(logits, b["ys"])

    def _class_means(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ways = self.cfg.ways
        onehot = (y[..., :, None] == torch.arange(ways, device=y.device)).to(z.dtype)  # [.., NK, N]
        counts = onehot.sum(-2)  # [.., N]
        means = (onehot.transpose(-1, -2) @ z) / counts.clamp_min(1.0)[..., :, None]  # [.., N, E]
        return means, counts

    def _head_from(self, theta: Mapping[str, torch.Tensor], zs: torch.Tensor | None, ys: torch.Tensor) -> Params:
        """Head of one task (``zs [NK, E]``) or of a chunk (``zs [T, NK, E]``, heads ``[T, N, ...]``)."""
        w, bias = theta["classifier.weight"], theta["classifier.bias"]
        lead = tuple(ys.shape[:-1])
        mode = self.cfg.head_init
        if mode == "meta":
            return {"classifier.weight": w.expand(*lead, *w.shape), "classifier.bias": bias.expand(*lead, *bias.shape)}
        zeros_b = torch.zeros(*lead, self.cfg.ways, dtype=w.dtype, device=w.device)
        if mode == "zero":
            return {"classifier.weight": torch.zeros(*lead, self.cfg.ways, w.shape[-1], dtype=w.dtype, device=w.device),
                    "classifier.bias": zeros_b}
        means, _ = self._class_means(zs, ys)
        return {"classifier.weight": F.normalize(means, dim=-1) * self.cfg.prototype_scale, "classifier.bias": zeros_b}

    def head(self, theta: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> Params:
        """The classifier head a task starts from: ``{classifier.weight [N, E], classifier.bias [N]}``."""
        zs = self._embed(theta, b["xs"]) if self.cfg.head_init == "prototype" else None
        return self._head_from(theta, zs, b["ys"])

    def finetune_accuracy(self, theta: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One task: head init, fine-tune on the support set, query accuracy (scalar in [0, 1])."""
        params = {**theta, **self.head(theta, b)}
        train = {k: v for k, v in params.items() if self.keep(k)}
        const = {k: v for k, v in params.items() if not self.keep(k)}
        adapted, _ = adapt(self._support_loss, train, const, b, self.inner)
        final = {**const, **adapted}
        logits = self.fm(final, lambda m, v: m.classify(m.embed(self.target, v)), b["xq"])
        return (logits.argmax(-1) == b["yq"]).to(logits.dtype).mean()

    def centroid_accuracy(self, theta: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One task, no fine-tuning: nearest support class mean (squared Euclidean) accuracy."""
        zs = self._embed(theta, b["xs"])
        zq = self._embed(theta, b["xq"])
        return self._centroid_from(zs, b["ys"], zq, b["yq"])

    def _centroid_from(self, zs, ys, zq, yq) -> torch.Tensor:
        means, counts = self._class_means(zs, ys)
        d = (zq[..., :, None, :] - means[..., None, :, :]).pow(2).sum(-1)  # [.., NQ, N]
        d = torch.where(counts[..., None, :] > 0, d, torch.full_like(d, float("inf")))
        return (d.argmin(-1) == yq).to(zs.dtype).mean(-1)

    # ------------------------------------------------------------------ batched path
    def embed_all(self, theta: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[n, E]`` of every target item (one pass, no graph)."""
        with torch.no_grad():
            return torch.cat([self._embed(theta, x[i : i + 4096]) for i in range(0, x.shape[0], 4096)])

    def _chunk_accuracy(self, theta: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], z_all: torch.Tensor | None) -> torch.Tensor:
        """Query accuracies ``[T]`` of one chunk of episodes (batched path)."""
        theta = dict(theta)
        if self.frozen_embedding:
            zs, zq = z_all[b["rs"]], z_all[b["rq"]]  # [T, NK, E], [T, NQ, E]
            head = self._head_from(theta, zs, b["ys"])
            if self.inner.steps > 0:
                def loss(p, bb):
                    return F.cross_entropy(bb["zs"] @ p["classifier.weight"].T + p["classifier.bias"], bb["ys"])

                head, _ = run_batched(loss, head, {}, {"zs": zs, "ys": b["ys"]}, self.inner, batched=tuple(head))
            logits = zq @ head["classifier.weight"].transpose(-1, -2) + head["classifier.bias"][:, None, :]
            return (logits.argmax(-1) == b["yq"]).to(logits.dtype).mean(-1)
        zs = z_all[b["rs"]] if (z_all is not None and self.cfg.head_init == "prototype") else None
        head = self._head_from(theta, zs, b["ys"])
        train = {k: v for k, v in theta.items() if self.keep(k) and k not in head}
        train.update(head)
        const = {k: v for k, v in theta.items() if not self.keep(k)}
        adapted, _ = run_batched(self._support_loss, train, const, {"xs": b["xs"], "ys": b["ys"]}, self.inner, batched=tuple(head))

        def query(p, xq, yq):
            logits = self.fm({**const, **p}, lambda m, v: m.classify(m.embed(self.target, v)), xq)
            return (logits.argmax(-1) == yq).to(logits.dtype).mean()

        with torch.no_grad():
            return vmap(query)(adapted, b["xq"], b["yq"])

    def accuracies(self, theta: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], z_all: torch.Tensor | None = None) -> torch.Tensor:
        """Fine-tuned query accuracy of every task of ``batch`` (leading task dim): ``[T]``."""
        n = next(iter(batch.values())).shape[0]
        if self.cfg.inner_loop == "sequential":
            fields = ("xs", "ys", "xq", "yq")
            return torch.stack([self.finetune_accuracy(theta, {k: batch[k][i] for k in fields}) for i in range(n)])
        outs = []
        for i in range(0, n, self.chunk):
            part = {k: v[i : i + self.chunk] for k, v in batch.items()}
            outs.append(self._chunk_accuracy(theta, part, z_all))
        return torch.cat(outs)

    def centroids(self, theta: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], z_all: torch.Tensor | None = None) -> torch.Tensor:
        """Nearest-centroid accuracy of every task of ``batch`` with the frozen parameters: ``[T]``."""
        n = next(iter(batch.values())).shape[0]
        if self.cfg.inner_loop == "sequential" or z_all is None:
            fields = ("xs", "ys", "xq", "yq")
            return torch.stack([self.centroid_accuracy(theta, {k: batch[k][i] for k in fields}) for i in range(n)])
        return self._centroid_from(z_all[batch["rs"]], batch["ys"], z_all[batch["rq"]], batch["yq"])
