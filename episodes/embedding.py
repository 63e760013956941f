"""The contract between frozen pretrained backbones and data preparation.

An :class:`Embedder` turns raw item values (a text string, an image or audio file path, a decoded
image array) into one ``float [D]`` embedding each. :func:`episodes.prepare.prepare_benchmark`
calls :meth:`Embedder.embed` once per modality and stores the result in the feature cache under
``features/<data set>/<modality>/<embedder name>/``, keyed by :meth:`Embedder.cache_key` (name,
weights hash, settings) and the inputs' identity. Implementations live outside this package
(``croma.backbones``); this module only fixes the interface, so ``episodes`` never imports them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from episodes.errors import DataError

__all__ = ["Embedder", "files_digest"]


def files_digest(paths: Sequence[str | os.PathLike]) -> str:
    """SHA-256 over the names and contents of ``paths`` (read in 1 MiB blocks), hex."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update(p.name.encode("utf-8") + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class Embedder:
    """Base class: subclasses set ``name`` and ``dim`` and define :meth:`cache_key`,
    :meth:`decode` and :meth:`forward`.

    Attributes:
        name: backbone name (cache folder), e.g. ``efficientnet-lite0``.
        dim: embedding width D.
        batch_size: decoded items per :meth:`forward` call.
    """

    name: str = "embedder"
    dim: int = 0
    batch_size: int = 16

    def cache_key(self) -> dict[str, Any]:
        """JSON-able description of everything that changes the embeddings (weights hash, settings)."""
        raise NotImplementedError

    def decode(self, value: Any) -> Any:
        """One raw value -> the model's input for one item. Raises DataError naming a bad file."""
        raise NotImplementedError

    def forward(self, batch: list[Any]) -> torch.Tensor:
        """Decoded items -> ``float [len(batch), D]`` (no gradients)."""
        raise NotImplementedError

    def embed(self, values: Sequence[Any], *, skip_bad: bool = False, progress: bool = False,
              desc: str = "") -> dict[str, torch.Tensor]:
        """Embed every value.

        Returns:
            ``{"features": float32 [n, D], "ok": bool [n]}``; rows of unreadable items (only with
            ``skip_bad``) are zero and ``ok`` False.

        Raises:
            DataError: an unreadable item without ``skip_bad`` (names the file).
        """
        n = len(values)
        feats = torch.zeros(n, int(self.dim), dtype=torch.float32)
        ok = torch.ones(n, dtype=torch.bool)
        bar = None
        if progress:
            from episodes.progress import progress_bar as tqdm

            bar = tqdm(total=n, desc=desc or self.name, unit="item")
        try:
            for start in range(0, n, self.batch_size):
                rows, batch = [], []
                for i in range(start, min(n, start + self.batch_size)):
                    try:
                        batch.append(self.decode(values[i]))
                        rows.append(i)
                    except DataError:
                        if not skip_bad:
                            raise
                        ok[i] = False
                if batch:
                    with torch.no_grad():
                        out = self.forward(batch)
                    if out.shape != (len(batch), int(self.dim)):
                        raise DataError(f"{self.name}: embedding of shape {tuple(out.shape)}, expected "
                                        f"({len(batch)}, {self.dim})")
                    feats[torch.tensor(rows)] = out.detach().float().cpu()
                if bar is not None:
                    bar.update(min(n, start + self.batch_size) - start)
        finally:
            if bar is not None:
                bar.close()
        return {"features": feats, "ok": ok}
