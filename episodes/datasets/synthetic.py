"""A tiny generated cross-modal benchmark for tests and speed benchmarks.

Each class ``c`` has a latent prototype ``mu_c``; an item draws a latent ``u = mu_c + noise``
and is seen in the source modality as ``A u + noise`` and in the target modality as
``B u + noise`` (fixed random maps A, B). Items hold both modalities, so every item is a
strong pair; ``weak=True`` instead groups classes into concept clusters. Nothing here is a
stand-in for a real benchmark: it exists so that the meta-learning code can be tested in
seconds with feature-vector inputs.
"""

from __future__ import annotations

import torch

from episodes.data import ModalityData, PreparedBenchmark
from episodes.samplers import episode_generator


def split_classes(num_classes: int, seed: int, fractions=(0.6, 0.2, 0.2)) -> dict[str, list[int]]:
    """Seeded disjoint split of ``range(num_classes)`` into meta_train / meta_val / meta_test."""
    g = episode_generator(seed, 0, "class-split")
    perm = torch.randperm(num_classes, generator=g).tolist()
    n_val = max(1, round(fractions[1] * num_classes))
    n_test = max(1, round(fractions[2] * num_classes))
    n_train = num_classes - n_val - n_test
    return {
        "meta_train": sorted(perm[:n_train]),
        "meta_val": sorted(perm[n_train : n_train + n_val]),
        "meta_test": sorted(perm[n_train + n_val :]),
    }


def make_synthetic_benchmark(
    *,
    num_classes: int = 20,
    per_class: int = 20,
    source_dim: int = 32,
    target_dim: int = 24,
    latent_dim: int = 8,
    noise: float = 0.5,
    weak: bool = False,
    source: str = "text",
    target: str = "audio",
    seed: int = 0,
    split_fractions=(0.6, 0.2, 0.2),
) -> PreparedBenchmark:
    """Build a :class:`PreparedBenchmark` with float feature vectors for both modalities.

    Args:
        num_classes: classes shared by both modalities.
        per_class: items per class (each item holds both modalities).
        source_dim, target_dim: feature sizes of the two modalities.
        latent_dim: size of the shared latent space.
        noise: observation noise scale.
        weak: group classes into concept clusters of 2 and use weak alignment.
        source, target: modality names to report.
        seed: everything is a pure function of the arguments.

    Returns:
        A validated :class:`PreparedBenchmark` named ``synthetic``.
    """
    g = episode_generator(seed, 0, "synthetic")
    mu = torch.randn(num_classes, latent_dim, generator=g) * 2.0
    a = torch.randn(latent_dim, source_dim, generator=g) / latent_dim**0.5
    b = torch.randn(latent_dim, target_dim, generator=g) / latent_dim**0.5
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    u = mu[labels] + 0.5 * torch.randn(labels.numel(), latent_dim, generator=g)
    xs = u @ a + noise * torch.randn(labels.numel(), source_dim, generator=g)
    xt = u @ b + noise * torch.randn(labels.numel(), target_dim, generator=g)
    n = labels.numel()
    clusters = labels // 2 if weak else torch.full((n,), -1, dtype=torch.long)
    cluster_names = [f"cluster{k}" for k in range((num_classes + 1) // 2)] if weak else []
    ids = [f"item{i}" for i in range(n)]
    splits = split_classes(num_classes, seed, split_fractions)
    held_out = set(splits["meta_val"]) | set(splits["meta_test"])
    if weak:  # a cluster is usable for alignment only if none of its classes is held out
        bad_clusters = {c // 2 for c in held_out}
        align_ok = torch.tensor([int(c) // 2 not in bad_clusters for c in labels.tolist()])
    else:
        align_ok = torch.tensor([int(c) not in held_out for c in labels.tolist()])
    train_mask = torch.tensor([int(c) not in held_out for c in labels.tolist()])
    # Within each meta-train class, alternate items between alignment and classification.
    within = torch.arange(n) % per_class
    align_rows = torch.nonzero(align_ok & (within % 2 == 0)).flatten()
    classify_rows = torch.nonzero(train_mask & (within % 2 == 1)).flatten()
    bench = PreparedBenchmark(
        name="synthetic",
        source=source,
        target=target,
        class_names=[f"class{c}" for c in range(num_classes)],
        cluster_names=cluster_names,
        data={
            source: ModalityData(features=xs, labels=labels.clone(), clusters=clusters.clone(), ids=list(ids)),
            target: ModalityData(features=xt, labels=labels.clone(), clusters=clusters.clone(), ids=list(ids)),
        },
        pairs=torch.stack([torch.arange(n), torch.arange(n)], dim=1),
        splits={**splits, "source_train": sorted(set(range(num_classes)) - held_out)},
        align_source_rows=align_rows,
        align_target_rows=align_rows.clone(),
        classify_source_rows=classify_rows,
        align_mode="weak" if weak else "strong",
        info={"generator": "synthetic", "seed": seed},
    )
    bench.validate()
    return bench
