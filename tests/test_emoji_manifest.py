"""experiments/tools/emoji_manifest.py on a tiny tarball in the npm package's layout."""

import io
import json
import tarfile

import numpy as np
from conftest import load_tool


def _tool():
    return load_tool("emoji_manifest")


def _png(seed):
    from PIL import Image

    buf = io.BytesIO()
    arr = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 4), dtype=np.uint8)
    Image.fromarray(arr, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _tarball(path, mod):
    emoji, files = [], {}
    for sub, n in (("face-smiling", 5), ("animal-mammal", 3), ("tool", 1)):
        for i in range(n):
            code = f"1F{len(emoji):03X}"
            emoji.append({"unified": code, "name": f"{sub} number {i}".upper(), "short_names": [f"{sub}_{i}"],
                          "category": "Things", "subcategory": sub, "image": f"{code.lower()}.png",
                          "has_img_google": True})
            files[f"package/img/google/64/{code.lower()}.png"] = _png(len(emoji))
    emoji.append({"unified": "1FFFF", "name": "NO IMAGE", "short_names": [], "category": "Things",
                  "subcategory": "tool", "image": "1ffff.png", "has_img_google": False})
    files["package/emoji.json"] = json.dumps(emoji).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_manifest_from_the_package_layout(tmp_path):
    mod = _tool()
    tgz = tmp_path / f"{mod.PACKAGE}-{mod.VERSION}.tgz"
    _tarball(tgz, mod)
    info = mod.build(tmp_path / "out", tgz, min_per_class=3, max_per_class=4, seed=0)
    assert info["classes"] == 2 and info["items"] == 4 + 3  # 'tool' too small; face-smiling capped at 4
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert {r["label"] for r in rows} == {"face-smiling", "animal-mammal"}
    first = next(r for r in rows if r["label"] == "animal-mammal")
    assert first["text"] == "animal-mammal number 0; animal-mammal 0" and first["cluster"] == "Things"
    assert (tmp_path / "out" / first["image"]).is_file()
    again = mod.build(tmp_path / "out", tgz, min_per_class=3, max_per_class=4, seed=0)
    assert again == info  # deterministic
    # the manifest loads as a croma data set
    from episodes.datasets import load_dataset

    ds = load_dataset("manifest", manifest=str(tmp_path / "out" / "manifest.jsonl"), source="text", target="image")
    assert len(ds.strong_pair_items()) == 7
