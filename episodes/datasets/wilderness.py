"""``wilderness``: CMU Wilderness Multilingual Speech, text (source) -> speech (target), language ID.

Layout under the data root (one folder per language, as the festvox build scripts of
https://github.com/festvox/datasets-CMU_Wilderness produce it)::

    wilderness/<LANG>/etc/txt.done.data     lines  ( <utt_id> "<text>" )
    wilderness/<LANG>/wav/<utt_id>.wav

Every utterance holds its text and its speech (a strong pair); label = ``<LANG>``. Languages
are split into meta-train / meta-val / meta-test by :func:`episodes.prepare.prepare_benchmark`
(seeded, over languages, never over utterances).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from episodes.data import CrossModalDataset, Item
from episodes.datasets.roots import require_dir, resolve_data_root
from episodes.errors import DataError

__all__ = ["parse_txt_done_data", "load_wilderness"]

WILDERNESS_URL = "https://github.com/festvox/datasets-CMU_Wilderness"
_LAYOUT = "<root>/wilderness/<LANG>/etc/txt.done.data and <root>/wilderness/<LANG>/wav/<utt_id>.wav"
_LINE = re.compile(r'^\(\s*(\S+)\s+"((?:[^"\\]|\\.)*)"\s*\)\s*$')


def parse_txt_done_data(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Parse a festvox ``txt.done.data`` file.

    Returns:
        ``[(utt_id, text), ...]`` in file order (``\\"`` unescaped).

    Raises:
        DataError: unreadable file or a line not of the form ``( <utt_id> "<text>" )`` (names
            the file and line).
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{p}: file not found; expected layout {_LAYOUT} (published at {WILDERNESS_URL})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: unreadable ({exc})") from None
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        if not m:
            raise DataError(f'{p}: line {n}: expected ( <utt_id> "<text>" ), got {line.strip()[:60]!r}')
        out.append((m.group(1), re.sub(r"\\(.)", r"\1", m.group(2))))
    return out


def load_wilderness(data_root: str | os.PathLike | None = None, *, seed: int = 0, skip_bad: bool = False,
                    languages=None, progress: bool = False, **_: object) -> CrossModalDataset:
    """Load CMU Wilderness language folders.

    Args:
        data_root: folder holding ``wilderness/`` (default ``$CROMA_DATA``).
        skip_bad: leave out utterances whose wav is missing (counted in ``meta["skipped"]``).
        languages: optional subset of language folder names.

    Returns:
        :class:`CrossModalDataset` ``wilderness`` (source ``text``, target ``audio``).

    Raises:
        DataError: missing root / folder / file, malformed ``txt.done.data``.
    """
    root = resolve_data_root(data_root, dataset="wilderness")
    base = require_dir(root / "wilderness", layout=_LAYOUT, published=WILDERNESS_URL)
    langs = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if languages is not None:
        unknown = sorted(set(languages) - set(langs))
        if unknown:
            raise DataError(f"{base}: language folder(s) {', '.join(unknown)} not found")
        langs = sorted(set(languages))
    if not langs:
        raise DataError(f"{base}: no language folders; expected layout {_LAYOUT} (published at {WILDERNESS_URL})")
    items: list[Item] = []
    skipped = 0
    for lang in langs:
        for utt, text in parse_txt_done_data(base / lang / "etc" / "txt.done.data"):
            wav = base / lang / "wav" / f"{utt}.wav"
            if not wav.is_file():
                if skip_bad:
                    skipped += 1
                    continue
                raise DataError(f"{wav}: wav of utterance {utt} not found (expected layout {_LAYOUT}; "
                                "use --skip-bad to leave it out)")
            items.append(Item(id=f"{lang}/{utt}", label=lang, modalities={"text": text, "audio": str(wav)}))
    return CrossModalDataset(name="wilderness", source="text", target="audio", items=items,
                             meta={"skipped": skipped, "languages": langs, "data_root": str(root)})
