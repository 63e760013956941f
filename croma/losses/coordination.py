"""Multi-modal coordination objectives PCMC and PCMR (Sánchez & Laguna, eqs. 3-9).

Both take a sequence of ``M >= 2`` embedding tensors ``[N, D]`` (row p of every tensor is the
same sample seen in another modality) and an optional ``present [N, M]`` bool mask saying which
modality each sample has. They are vmap/grad-safe: masks act through ``masked_fill`` / ``where``
on derived tensors and weighted means (no boolean indexing, no ``.item()``).

Their registered modules also have :meth:`forward_multi` (``multimodal = True``), which the
``align_multi`` task family (:mod:`croma.meta.multimodal`) calls to align every modality of a
benchmark at once, as the paper intends; with two modalities and no absent item ``pcmc`` is
exactly ``clip``.
"""

from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

import torch

from croma.losses.contrastive import _TEMPERATURE, Temperature, _ce_diag, _check_embeddings, _check_positive, _normalize
from croma.losses.registry import HyperRange, LossModule, register_loss

__all__ = ["pcmc_loss", "pcmr_loss"]


def _check_modalities(fn: str, embeddings: Any, present: Any) -> list[torch.Tensor]:
    """Validate ``embeddings`` (M >= 2 tensors [N, D], same shape/dtype) and ``present`` [N, M] bool."""
    if isinstance(embeddings, torch.Tensor) or not isinstance(embeddings, Sequence):
        raise ValueError(f"{fn}: embeddings must be a list of M >= 2 tensors [N, D] (got {type(embeddings).__name__})")
    embs = list(embeddings)
    if len(embs) < 2:
        raise ValueError(f"{fn}: embeddings must hold at least 2 modalities (got {len(embs)})")
    for m, z in enumerate(embs):
        _check_embeddings(fn, f"embeddings[{m}]", z)
        if z.shape != embs[0].shape:
            raise ValueError(
                f"{fn}: embeddings[{m}] has shape {tuple(z.shape)} but embeddings[0] has shape "
                f"{tuple(embs[0].shape)} (all must be [N, D])"
            )
        if z.dtype != embs[0].dtype:
            raise ValueError(f"{fn}: embeddings[{m}] has dtype {z.dtype} but embeddings[0] has {embs[0].dtype}")
    if present is not None:
        n, m_count = embs[0].shape[0], len(embs)
        if not isinstance(present, torch.Tensor) or present.dtype != torch.bool:
            raise ValueError(f"{fn}: present must be a bool tensor [N, M] = [{n}, {m_count}]")
        if tuple(present.shape) != (n, m_count):
            raise ValueError(
                f"{fn}: present has shape {tuple(present.shape)}, expected [N, M] = [{n}, {m_count}]"
            )
    return embs


def _masked_ce_diag(logits: torch.Tensor, col_present: torch.Tensor) -> torch.Tensor:
    """Per-row diagonal cross-entropy with logits towards absent columns set to -inf.

    Args:
        logits: ``[N, N]``.
        col_present: ``[N]`` bool (column q may be a candidate).

    Returns:
        ``[N]`` per-row losses. A finite stand-in for -inf (the dtype's lowest value) keeps
        softmax and gradients finite even for rows whose every candidate is absent; such rows
        must be excluded by the caller.
    """
    lowest = torch.finfo(logits.dtype).min
    return _ce_diag(logits.masked_fill(~col_present.unsqueeze(-2), lowest))


def pcmc_loss(
    embeddings: Sequence[torch.Tensor],
    temperature: Temperature = 0.07,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pairwise cross-modal contrastive loss (PCMC, eqs. 3-5 and 8).

    For each pair of modalities ``i < j``: ``S = x̂⁽ⁱ⁾ x̂⁽ʲ⁾ᵀ / τ`` and the symmetric CLIP term
    ``½(CE(S, diag) + CE(Sᵀ, diag))``; the loss is the sum over pairs. With ``present``, logits
    towards absent items are -inf (eq. 8) and rows whose anchor or positive is absent are left
    out of the mean (a pair with no complete row contributes 0). With ``M = 2`` and no mask this
    equals :func:`croma.losses.clip_loss`.

    Args:
        embeddings: ``M >= 2`` tensors ``[N, D]``, one per modality.
        temperature: τ > 0.
        present: optional bool ``[N, M]``; ``present[p, m]`` = sample p has modality m.

    Returns:
        scalar tensor (device/dtype of the inputs).

    Raises:
        ValueError: fewer than 2 modalities, shape/dtype mismatch or bad mask (names the argument).
    """
    embs = _check_modalities("pcmc_loss", embeddings, present)
    _check_positive("pcmc_loss", "temperature", temperature)
    xs = [_normalize(z) for z in embs]
    total = xs[0].new_zeros(())
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            s = xs[i] @ xs[j].transpose(-1, -2) / temperature  # [N, N]
            if present is None:
                total = total + 0.5 * (_ce_diag(s).mean() + _ce_diag(s.transpose(-1, -2)).mean())
                continue
            p_i, p_j = present[:, i], present[:, j]  # [N] each
            valid = p_i & p_j  # [N] rows with anchor and positive present
            ce_ij = _masked_ce_diag(s, p_j)  # anchors in i, candidates in j
            ce_ji = _masked_ce_diag(s.transpose(-1, -2), p_i)  # anchors in j, candidates in i
            zero = torch.zeros_like(ce_ij)
            rows = torch.where(valid, ce_ij, zero) + torch.where(valid, ce_ji, zero)  # [N]
            count = valid.to(s.dtype).sum().clamp(min=1.0)
            total = total + 0.5 * rows.sum() / count
    return total


def pcmr_loss(
    embeddings: Sequence[torch.Tensor],
    rho: float = 1.0,
    threshold: float = 0.99,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pairwise cross-modal regression loss (PCMR, eqs. 6, 7 and 9).

    For each pair ``i < j``: ``S = x̂⁽ⁱ⁾ x̂⁽ʲ⁾ᵀ`` (cosine similarities, no temperature); target
    ``T_pq = 1`` if ``p = q`` or ``max_m cos(x_p⁽ᵐ⁾, x_q⁽ᵐ⁾) > threshold`` over the modalities
    present for both p and q, else 0 (no gradient through T); ``H_pq = present[p, i]·present[q, j]``
    (all ones without ``present``); term ``= ‖H ⊙ (S − T)‖_F^(2+ρ)``. Returns the sum of terms.

    Args:
        embeddings: ``M >= 2`` tensors ``[N, D]``, one per modality.
        rho: power-modulating factor ρ >= 0.
        threshold: intra-modal cosine above which two samples count as matching.
        present: optional bool ``[N, M]``.

    Returns:
        scalar tensor (device/dtype of the inputs).

    Raises:
        ValueError: as :func:`pcmc_loss`, or ρ < 0.
    """
    embs = _check_modalities("pcmr_loss", embeddings, present)
    _check_rho("pcmr_loss", rho)
    xs = [_normalize(z) for z in embs]
    n = xs[0].shape[0]
    # T [N, N] (no gradient): max over modalities of intra-modal cosine, present for both samples.
    intra = torch.stack([x.detach() @ x.detach().transpose(-1, -2) for x in xs])  # [M, N, N]
    if present is not None:
        pm = present.transpose(0, 1)  # [M, N]
        both = pm.unsqueeze(-1) & pm.unsqueeze(-2)  # [M, N, N]
        intra = intra.masked_fill(~both, float("-inf"))
    eye = torch.eye(n, dtype=torch.bool, device=xs[0].device)
    target = ((intra.amax(dim=0) > threshold) | eye).to(xs[0].dtype)  # [N, N]
    power = (2.0 + rho) / 2.0
    total = xs[0].new_zeros(())
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            diff = xs[i] @ xs[j].transpose(-1, -2) - target  # [N, N]
            if present is not None:
                h = present[:, i].unsqueeze(-1) & present[:, j].unsqueeze(-2)  # [N, N]
                diff = diff * h.to(diff.dtype)
            total = total + diff.pow(2).sum().pow(power)  # ‖·‖_F^(2+ρ) = (Σ d²)^((2+ρ)/2)
    return total


def _check_rho(fn: str, rho: Any) -> None:
    if isinstance(rho, bool) or not isinstance(rho, (numbers.Real, torch.Tensor)):
        raise ValueError(f"{fn}: rho must be a number >= 0 (got {rho!r})")
    if isinstance(rho, numbers.Real) and not rho >= 0:
        raise ValueError(f"{fn}: rho must be >= 0 (got {rho!r})")


@register_loss(
    "pcmc",
    paper="Sánchez & Laguna, Cross-Modal Coordination (PCMC), eqs. 3-5, 8; all modalities at once (2: = clip)",
    hyper={"temperature": 0.07},
    ranges={"temperature": _TEMPERATURE},
    formula="Σ_{i<j} ½(CE(S⁽ⁱʲ⁾, diag) + CE(S⁽ⁱʲ⁾ᵀ, diag)), S⁽ⁱʲ⁾ = x̂⁽ⁱ⁾x̂⁽ʲ⁾ᵀ/τ, over all M modalities, "
            "absent items masked; M = 2, none absent: = clip",
)
class PCMCLoss(LossModule):
    """``pcmc_loss([z_source, z_target], temperature, present)``; context: ``present [N, 2]``.

    :meth:`forward_multi` aligns M >= 2 modalities at once (``align_multi`` tasks)."""

    context_keys = ("present",)
    multimodal = True

    def forward_multi(self, embeddings: Sequence[torch.Tensor], present: torch.Tensor | None = None) -> torch.Tensor:
        """``pcmc_loss(embeddings, temperature, present)``: M tensors ``[N, D]``, ``present [N, M]``."""
        return pcmc_loss(list(embeddings), present=present, **self.hparams)

    def check_hyper(self, hp: Mapping[str, Any]) -> None:
        _check_positive("pcmc", "temperature", hp["temperature"])

    def forward(self, z_source: torch.Tensor, z_target: torch.Tensor, **context: Any) -> torch.Tensor:
        self._check_context(context)
        return pcmc_loss([z_source, z_target], present=context.get("present"), **self.hparams)


@register_loss(
    "pcmr",
    paper="Sánchez & Laguna, Cross-Modal Coordination (PCMR), eqs. 6, 7, 9; all modalities at once",
    hyper={"rho": 1.0, "threshold": 0.99},
    # ρ: the Frobenius norm is raised to 2 + ρ, so a large ρ overflows; t: a cosine (t >= 1: identity targets)
    ranges={"rho": HyperRange(0.0, 8.0, usual=(0.0, 2.0)), "threshold": HyperRange(-1.0, 1.0, usual=(0.0, 1.0))},
    formula="Σ_{i<j} ‖H ⊙ (x̂⁽ⁱ⁾x̂⁽ʲ⁾ᵀ − T)‖_F^(2+ρ), T_pq = [p=q or max_m cos(x_p⁽ᵐ⁾,x_q⁽ᵐ⁾) > t], "
            "over all M modalities, H masks absent items",
)
class PCMRLoss(LossModule):
    """``pcmr_loss([z_source, z_target], rho, threshold, present)``; context: ``present [N, 2]``.

    :meth:`forward_multi` aligns M >= 2 modalities at once (``align_multi`` tasks)."""

    context_keys = ("present",)
    multimodal = True

    def forward_multi(self, embeddings: Sequence[torch.Tensor], present: torch.Tensor | None = None) -> torch.Tensor:
        """``pcmr_loss(embeddings, rho, threshold, present)``: M tensors ``[N, D]``, ``present [N, M]``."""
        return pcmr_loss(list(embeddings), present=present, **self.hparams)

    def check_hyper(self, hp: Mapping[str, Any]) -> None:
        _check_rho("pcmr", hp["rho"])

    def forward(self, z_source: torch.Tensor, z_target: torch.Tensor, **context: Any) -> torch.Tensor:
        self._check_context(context)
        return pcmr_loss([z_source, z_target], present=context.get("present"), **self.hparams)
