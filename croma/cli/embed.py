"""`croma embed RUN --modality M --input FILE.jsonl --out FILE.npz`: embeddings of new items.

Rows are manifest lines holding the modality (``{"id", "<modality>": value}``, labels optional).
The ``.npz`` holds ``ids`` (text), ``embeddings`` (``float32 [n, E]``, the run's shared space)
and ``labels`` when every row had one; it is written atomically and is the same file for the
same command.
"""

from __future__ import annotations

import io
import os
import sys


def add_parser(sub) -> None:
    p = sub.add_parser(
        "embed",
        help="embed new items with a trained run (ids and embeddings to an .npz file)",
        description="Load RUN without its training data and write the embeddings of the INPUT rows "
        "(manifest lines holding MODALITY) in the run's shared space.",
    )
    p.add_argument("run_dir", metavar="RUN", help="run folder of 'croma train' (or a .pt checkpoint)")
    p.add_argument("--modality", required=True, help="text, image or audio (speech): one of the run's modalities")
    p.add_argument("--input", required=True, metavar="FILE.jsonl", help="manifest rows holding the modality")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="output: ids, embeddings [n, E], labels")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="default cpu")
    p.set_defaults(func=run)


def write_atomically(path: str | os.PathLike, data: bytes, flag: str) -> None:
    """Write ``data`` to ``path`` through a temporary file moved into place (nothing half-written).

    Raises:
        CromaError: ``path`` is a folder or cannot be written (names the flag and the path).
    """
    from croma.errors import CromaError
    from episodes.cache import atomic_write

    try:
        atomic_write(path, lambda fh: fh.write(data))
    except OSError as exc:
        raise CromaError(f"{flag} {path}: cannot write it ({exc.strerror or exc})") from None


def run(args) -> int:
    import numpy as np

    from croma.errors import CromaError
    from croma.runmodel import load_model
    from episodes.datasets.rows import load_rows
    from episodes.errors import DataError

    if not str(args.out).endswith(".npz"):
        raise CromaError(f"--out {args.out}: give a file name ending in .npz")
    model = load_model(args.run_dir, which=args.checkpoint, device=args.device)
    mod = model._modality(args.modality)
    try:
        left: list[str] = []  # rows of a manifest that hold other modalities only
        ids, values, labels = load_rows(args.input, mod, labels="optional", flag="--input", skipped=left)
    except DataError as exc:
        raise CromaError(str(exc)) from None
    z = model.embed(mod, values, ids=ids)
    arrays = {"ids": np.array(ids, dtype=str), "embeddings": z.numpy().astype(np.float32)}
    if labels is not None:
        arrays["labels"] = np.array(labels, dtype=str)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomically(args.out, buf.getvalue(), "--out")
    print(f"wrote {len(ids)} {mod} embeddings of size {z.shape[1]} to {args.out}"
          + (f"; left out {len(left)} row(s) with no {mod!r} value (first: {left[0]})" if left else ""))
    sys.stdout.flush()
    return 0
