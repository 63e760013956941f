"""Pairwise contrastive objectives: NCE (CROMA eq. 2), CLIP, CWCL (Srinivasa et al., eqs. 3-4).

Every function takes raw embeddings ``[N, D]`` (any float dtype, any device), L2-normalises them
internally and returns a scalar tensor on the inputs' device and dtype. They are safe under
``torch.func.vmap`` and ``torch.func.grad``: no ``.item()``, no data-dependent Python branches and
no in-place operations on inputs. Notation: ``â = a / ‖a‖``; CE is cross-entropy with the
diagonal as targets, averaged over rows.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from croma.losses.registry import HyperRange, LossModule, register_loss

__all__ = ["CWCL_WEIGHTS", "clip_loss", "cwcl_loss", "nce_loss"]

Temperature = float | torch.Tensor


# ----------------------------------------------------------------------------- shared helpers
def _check_embeddings(fn: str, name: str, z: Any, *, min_rows: int = 1) -> None:
    """ValueError naming ``name`` unless ``z`` is a floating tensor ``[N, D]`` with N >= min_rows."""
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"{fn}: {name} must be a tensor [N, D] (got {type(z).__name__})")
    if z.dim() != 2:
        raise ValueError(f"{fn}: {name} must be 2-D [N, D] (got shape {tuple(z.shape)})")
    if not z.is_floating_point():
        raise ValueError(f"{fn}: {name} must be a floating-point tensor (got {z.dtype})")
    if z.shape[0] < min_rows:
        raise ValueError(f"{fn}: {name} needs at least {min_rows} rows (got shape {tuple(z.shape)})")


def _check_pair(fn: str, name_a: str, a: Any, name_b: str, b: Any, *, min_rows: int = 1) -> None:
    """Both ``[N, D]`` floating tensors of the same shape and dtype; ValueError names the culprit."""
    _check_embeddings(fn, name_a, a, min_rows=min_rows)
    _check_embeddings(fn, name_b, b, min_rows=min_rows)
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: {name_b} has shape {tuple(b.shape)} but {name_a} has shape {tuple(a.shape)} "
            f"(both must be [N, D] with the same N and D)"
        )
    if a.dtype != b.dtype:
        raise ValueError(f"{fn}: {name_b} has dtype {b.dtype} but {name_a} has dtype {a.dtype}")


def _check_positive(fn: str, name: str, value: Any) -> None:
    """A Python number must be > 0 (tensors are not inspected: no data-dependent checks)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise ValueError(f"{fn}: {name} must be a positive number (got {value!r})")
    if isinstance(value, numbers.Real) and not value > 0:
        raise ValueError(f"{fn}: {name} must be > 0 (got {value!r})")


def _normalize(z: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation ``[N, D] -> [N, D]`` (zero rows stay zero)."""
    return F.normalize(z, dim=-1)


def _ce_diag(logits: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy with target = row index: ``[N, N] -> [N]``."""
    return -torch.diagonal(torch.log_softmax(logits, dim=-1))


def _clip_normalized(a: torch.Tensor, b: torch.Tensor, temperature: Temperature) -> torch.Tensor:
    """Symmetric CLIP loss of already-normalised ``a, b [N, D]`` -> scalar."""
    s = a @ b.transpose(-1, -2) / temperature  # [N, N]
    return 0.5 * (_ce_diag(s).mean() + _ce_diag(s.transpose(-1, -2)).mean())


# ----------------------------------------------------------------------------- NCE
def nce_loss(z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """CROMA's NCE alignment loss (paper eq. 2) on normalised embeddings, negatives averaged.

    ``mean_i [ -<ŝ_i, t̂_i> + (1/(N-1)) Σ_{j≠i} <ŝ_i, t̂_j> ]``

    Args:
        z_s: source embeddings ``[N, D]`` (N >= 2).
        z_t: target embeddings ``[N, D]``; row i is paired with ``z_s[i]``.

    Returns:
        scalar tensor (device/dtype of the inputs), in ``[-2, 2]``.

    Raises:
        ValueError: shapes or dtypes differ, not 2-D, or N < 2 (names the argument).
    """
    _check_pair("nce_loss", "z_s", z_s, "z_t", z_t, min_rows=2)
    n = z_s.shape[0]
    s = _normalize(z_s) @ _normalize(z_t).transpose(-1, -2)  # [N, N] cosine similarities
    pos = torch.diagonal(s)  # [N]
    neg = (s.sum(dim=-1) - pos) / (n - 1)  # [N] mean over j != i
    return (neg - pos).mean()


# ----------------------------------------------------------------------------- CLIP
def clip_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: Temperature = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP: ``S = â b̂ᵀ / τ``, ``½ (CE(S, diag) + CE(Sᵀ, diag))``.

    Args:
        z_a, z_b: paired embeddings ``[N, D]`` (row i of each is a positive pair).
        temperature: τ > 0 (float or 0-d tensor).

    Returns:
        scalar tensor (device/dtype of the inputs).

    Raises:
        ValueError: shapes or dtypes differ, not 2-D (names the argument), τ <= 0.
    """
    _check_pair("clip_loss", "z_a", z_a, "z_b", z_b)
    _check_positive("clip_loss", "temperature", temperature)
    return _clip_normalized(_normalize(z_a), _normalize(z_b), temperature)


# ----------------------------------------------------------------------------- CWCL
def cwcl_loss(
    z_u: torch.Tensor,
    z_v: torch.Tensor,
    temperature: Temperature = 0.07,
    weights_from: torch.Tensor | None = None,
) -> torch.Tensor:
    """Continuously weighted contrastive loss (CWCL, Srinivasa et al., eqs. 3 + 4).

    U is the modality being taught, V the supervising one. With ``S = û v̂ᵀ / τ`` and
    ``W_ij = <ŵ_i, ŵ_j>/2 + 0.5`` computed from ``w = weights_from`` (default ``z_v``), **detached**:

    ``L = -(1/N) Σ_i [Σ_j W_ij log softmax_j(S_i·)] / Σ_j W_ij  +  CE(Sᵀ, diag)``

    Args:
        z_u: embeddings of the taught modality ``[N, D]``.
        z_v: embeddings of the supervising modality ``[N, D]``.
        temperature: τ > 0.
        weights_from: optional ``[N, D']`` embeddings defining the intra-modal weights W (e.g. a
            frozen pre-trained space); no gradient flows into it.

    Returns:
        scalar tensor (device/dtype of the inputs).

    Raises:
        ValueError: shape/dtype mismatch naming the argument, τ <= 0.
    """
    _check_pair("cwcl_loss", "z_u", z_u, "z_v", z_v)
    _check_positive("cwcl_loss", "temperature", temperature)
    if weights_from is not None:
        _check_embeddings("cwcl_loss", "weights_from", weights_from)
        if weights_from.shape[0] != z_u.shape[0]:
            raise ValueError(
                f"cwcl_loss: weights_from has {weights_from.shape[0]} rows but z_u has {z_u.shape[0]} "
                f"(weights_from must be [N, D'] with the same N)"
            )
    w = _normalize((z_v if weights_from is None else weights_from).detach()).to(z_u.dtype)
    weights = w @ w.transpose(-1, -2) / 2 + 0.5  # [N, N] in [0, 1], W_ii = 1
    s = _normalize(z_u) @ _normalize(z_v).transpose(-1, -2) / temperature  # [N, N]
    logp = torch.log_softmax(s, dim=-1)  # [N, N] softmax over V items for each U anchor
    weighted = (weights * logp).sum(dim=-1) / weights.sum(dim=-1)  # [N]
    return -weighted.mean() + _ce_diag(s.transpose(-1, -2)).mean()


# ----------------------------------------------------------------------------- modules
_TEMPERATURE = HyperRange(1e-4, 10.0, usual=(0.005, 1.0))
"""The range of every objective's ``temperature`` (τ): logits are cosines / τ, so τ below 1e-4
saturates the softmax and above 10 makes every pair alike (nothing is learned)."""


def _check_temperature(loss: str, hp: Mapping[str, Any]) -> None:
    _check_positive(loss, "temperature", hp["temperature"])


@register_loss(
    "nce",
    paper="Liang et al., CROMA (meta-alignment), eq. 2",
    hyper={},
    formula="mean_i[ -<ŝ_i,t̂_i> + 1/(N-1) Σ_{j≠i} <ŝ_i,t̂_j> ]",
)
class NCELoss(LossModule):
    """``nce_loss(z_source, z_target)``."""

    def forward(self, z_source: torch.Tensor, z_target: torch.Tensor, **context: Any) -> torch.Tensor:
        self._check_context(context)
        return nce_loss(z_source, z_target)


@register_loss(
    "clip",
    paper="Radford et al. 2021, CLIP",
    hyper={"temperature": 0.07},
    ranges={"temperature": _TEMPERATURE},
    formula="S = ŝ t̂ᵀ/τ;  ½(CE(S, diag) + CE(Sᵀ, diag))",
)
class CLIPLoss(LossModule):
    """``clip_loss(z_source, z_target, temperature)``."""

    def check_hyper(self, hp: Mapping[str, Any]) -> None:
        _check_temperature("clip", hp)

    def forward(self, z_source: torch.Tensor, z_target: torch.Tensor, **context: Any) -> torch.Tensor:
        self._check_context(context)
        return clip_loss(z_source, z_target, **self.hparams)


CWCL_WEIGHTS = ("auto", "frozen_source", "encoder")
"""Choices of the ``cwcl`` hyper-parameter ``weights`` (where the intra-modal weights W come from)."""


@register_loss(
    "cwcl",
    paper="Srinivasa et al., CWCL, eqs. 3-4",
    hyper={"temperature": 0.07, "weights": "auto"},
    ranges={"temperature": _TEMPERATURE},
    formula="S = û v̂ᵀ/τ, W = ŵŵᵀ/2+½ (no grad; w = frozen source features or source embeddings, see weights=);  "
    "-1/N Σ_i Σ_j W_ij log softmax_j(S_i·) / Σ_j W_ij + CE(Sᵀ, diag)",
)
class CWCLLoss(LossModule):
    """``cwcl_loss(z_u=z_target, z_v=z_source, temperature, weights_from)``.

    The target modality is the one being taught (U), the source supervises (V). Context:
    ``weights_from [N, D']`` (optional): the embeddings defining the intra-modal weights W.

    Hyper-parameter ``weights`` says where W comes from:

    * ``"frozen_source"`` — CWCL's setting (Srinivasa et al., sec. 2.3: "similarity weights being
      computed only in the frozen modality initialized with a pre-trained model"): W is computed
      from the source items' *frozen* features, which the caller passes as ``weights_from``
      (``croma``'s alignment tasks pass the batch's raw source features: with
      ``--backbone SOURCE=NAME`` these are the frozen pretrained embeddings the adapter reads).
      Training the encoder never changes W.
    * ``"encoder"`` — W from the source embeddings of the encoder being trained (detached);
      ``weights_from`` is ignored. Before this option existed this was the only behaviour of the
      alignment tasks.
    * ``"auto"`` (default) — the alignment tasks resolve it per benchmark: ``frozen_source`` when
      the source modality's features come from a frozen pretrained backbone
      (``bench.info["backbones"]``), ``encoder`` otherwise (see :meth:`resolve_weights`). Called
      directly, the module uses ``weights_from`` when given, else the source embeddings.

    ``"frozen_source"`` without ``weights_from`` (a caller that has no frozen features, e.g. the
    ordinary-training baselines) falls back to the source embeddings with a one-time warning.
    """

    context_keys = ("weights_from",)

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self._warned = False

    def check_hyper(self, hp: Mapping[str, Any]) -> None:
        _check_temperature("cwcl", hp)
        if hp["weights"] not in CWCL_WEIGHTS:
            raise ValueError(f"cwcl: weights must be one of {', '.join(CWCL_WEIGHTS)} (got {hp['weights']!r})")

    def resolve_weights(self, source_frozen: bool) -> str:
        """``"frozen_source"`` or ``"encoder"``: ``weights`` with ``"auto"`` resolved.

        Args:
            source_frozen: whether the source features are frozen pretrained embeddings.
        """
        mode = str(self.hparams["weights"])
        if mode == "auto":
            return "frozen_source" if source_frozen else "encoder"
        return mode

    def forward(self, z_source: torch.Tensor, z_target: torch.Tensor, **context: Any) -> torch.Tensor:
        self._check_context(context)
        hp = {k: v for k, v in self.hparams.items() if k != "weights"}
        mode = self.hparams["weights"]
        weights_from = None if mode == "encoder" else context.get("weights_from")
        if mode == "frozen_source" and weights_from is None and not self._warned:
            self._warned = True
            warnings.warn("cwcl weights=frozen_source: the caller gave no weights_from (frozen source features); "
                          "using the source embeddings instead", RuntimeWarning, stacklevel=2)
        return cwcl_loss(z_target, z_source, weights_from=weights_from, **hp)
