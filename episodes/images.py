"""Image front-end: image files or decoded arrays -> ``uint8 [3, size, size]`` / normalised floats.

* :func:`load_image_uint8` (PIL decode, reduced for large images, RGB with transparency composited
  over white, bilinear resize; more than :data:`MAX_IMAGE_PIXELS` refused from the header),
  :func:`load_image` (the same, ImageNet-normalised), :func:`normalize_images`.
* :func:`images_from_arrays` for already-decoded arrays (CIFAR's ``uint8`` rows; ``uint16`` and
  floats in [0, 1] too, :func:`as_uint8`).

Re-exported by :mod:`episodes.frontends`, which also holds the text and audio front-ends.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from episodes.errors import DataError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_ALPHA",
    "MAX_IMAGE_PIXELS",
    "load_image",
    "load_image_uint8",
    "normalize_images",
    "images_from_arrays",
    "as_uint8",
]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


_ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".pkl", ".pickle", ".safetensors")


def _refuse_empty(p: Path, what: str) -> None:
    """A 0-byte file (an interrupted copy or download) gets its own message, not a decoder's; an
    array / pickle file (``.npy``, ``.pt``, ...) is named as such and never opened (nothing unpickled)."""
    if p.suffix.lower() in _ARRAY_SUFFIXES:
        raise DataError(f"{p}: a {p.suffix} file is not an {what} file; a manifest names {what} files (decoded arrays "
                        "go through croma.records_to_dataset in Python; array files are never loaded)")
    try:
        empty = p.stat().st_size == 0
    except OSError:
        return
    if empty:
        raise DataError(f"{p}: {what} file is empty (0 bytes)")


def _pil_open(path: Path):
    from PIL import Image

    return Image.open(path)


IMAGE_ALPHA = "white"  # transparent pixels are composited over white (part of image cache keys)


_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


# Images are refused above this many pixels, from the header, before any pixel is decoded (a 328 KB
# PNG can hold 13000 x 13000 pixels); raise it here for larger scans.
MAX_IMAGE_PIXELS = 100_000_000
# Above this many pixels an image is decoded reduced: JPEG at 1/2, 1/4 or 1/8 scale (PIL's draft),
# then converted to RGB strip by strip and box-reduced to about IMAGE_REDUCE_GAP x the target side
# before the bilinear resize (as PIL's ``reducing_gap``). Smaller images take the plain path
# (decode, RGB, resize), so their pixels are unchanged.
IMAGE_REDUCE_ABOVE = 4_000_000
IMAGE_REDUCE_GAP = 8
_STRIP_PIXELS = 1 << 18


def _to_rgb(im, scale: bool | None = None):
    """A PIL image -> RGB; images with transparency (RGBA, LA, palette with a transparent colour)
    are composited over white, so what a transparent pixel happens to store does not leak in.
    16-bit greyscale (``I;16``, or ``I`` holding values beyond 0..255) is scaled to 8 bits; float
    greyscale (``F``) in [0, 1] is scaled by 255 (other ranges are clipped to 0..255, as before).
    ``scale``: that decision for ``I`` / ``F``, made on the whole image (:func:`_scale_decision`)
    when ``im`` is one strip of it; ``None`` decides on ``im``."""
    from PIL import Image

    if im.mode in _DEEP_MODES:  # 16-bit grey: scale 0..65535 to 0..255 (PIL's convert clips at 255: all white)
        a = np.asarray(im)
        if scale is None:
            scale = im.mode != "I" or int(a.max(initial=0)) > 255 or int(a.min(initial=0)) < 0
        if scale:
            a = (np.clip(a.astype(np.int64), 0, 65535) * 255 + 32767) // 65535
            return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":  # 32-bit float grey (TIFF): values in [0, 1] are scaled (PIL's convert makes them black)
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("float image holds NaN or infinite pixels")
        if scale is None:
            scale = bool(a.size and a.min() >= 0.0 and a.max() <= 1.0)
        if scale:
            return Image.fromarray(np.rint(a * 255.0).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        out = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out.alpha_composite(rgba)
        return out.convert("RGB")
    return im.convert("RGB")


def _scale_decision(im) -> bool | None:
    """:func:`_to_rgb`'s 16-bit / float scaling decision for the whole of ``im`` (its extrema, no copy)."""
    if im.mode in _DEEP_MODES:
        if im.mode != "I":
            return True
        lo, hi = im.getextrema()
        return hi > 255 or lo < 0
    if im.mode == "F":
        lo, hi = im.getextrema()
        return bool(lo >= 0.0 and hi <= 1.0)  # NaN compares False; the strips refuse it
    return None


def _reduced_rgb(im, size: int):
    """``im`` (over :data:`IMAGE_REDUCE_ABOVE` pixels) -> an RGB image about ``IMAGE_REDUCE_GAP x size``
    a side: JPEG decoded at a reduced scale, then converted and box-reduced strip by strip, so no
    full-size RGB / RGBA copy is ever made (memory: the decoded image plus one strip)."""
    from PIL import Image

    want = IMAGE_REDUCE_GAP * size
    im.draft(None, (want, want))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, still >= want a side; others: no-op
    im.load()
    w, h = im.size
    kx, ky = max(1, w // want), max(1, h // want)
    scale = _scale_decision(im)
    out = Image.new("RGB", (-(-w // kx), -(-h // ky)))
    rows = max(ky, (_STRIP_PIXELS // max(w, 1)) // ky * ky)  # a multiple of ky: strips reduce like the whole
    for top in range(0, h, rows):
        strip = _to_rgb(im.crop((0, top, w, min(h, top + rows))), scale)
        out.paste(strip.reduce((kx, ky)) if kx > 1 or ky > 1 else strip, (0, top // ky))
    return out


def load_image_uint8(path: str | os.PathLike, size: int = 32) -> torch.Tensor:
    """Decode an image file, convert to RGB (transparency composited over white) and resize
    (bilinear) to ``size x size``.

    Images over :data:`MAX_IMAGE_PIXELS` (100 megapixels) are refused from their header, before
    any pixel is decoded; images over :data:`IMAGE_REDUCE_ABOVE` (4 megapixels) are decoded reduced
    (:func:`_reduced_rgb`: memory about one decoded copy in the file's own mode).

    Returns:
        ``uint8 [3, size, size]``.

    Raises:
        DataError: missing, unreadable, truncated or too large image (names the file; the size).
    """
    if type(path).__module__.startswith("PIL."):  # an already-opened PIL image: decoded as a file would be
        from PIL import Image

        if not isinstance(path, Image.Image):
            raise DataError(f"image values are file paths, arrays [H, W, 3] or PIL images (got {type(path).__name__})")
        return torch.from_numpy(np.asarray(_to_rgb(path).resize((size, size), Image.BILINEAR), dtype=np.uint8)
                                .transpose(2, 0, 1).copy())
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"image values are file paths, arrays [H, W, 3] or PIL images (got {type(path).__name__})")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    _refuse_empty(p, "image")
    try:
        import warnings

        from PIL import Image

        # PIL's warnings (a header claiming ~100 MP, corrupt EXIF, ...) would print lines between the
        # progress bar and the one error line; what matters is whether the image decodes
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _pil_open(p) as im:
                w, h = im.size  # from the header: nothing decoded yet
                if w * h > MAX_IMAGE_PIXELS:
                    raise DataError(_too_large(p, f"{w}x{h} pixels, {w * h / 1e6:.0f} megapixels"))
                rgb = _reduced_rgb(im, size) if w * h > IMAGE_REDUCE_ABOVE else _to_rgb(im)
                arr = np.asarray(rgb.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    except DataError:
        raise
    except MemoryError:
        raise DataError(_too_large(p, "not enough memory to decode it")) from None
    except Exception as exc:  # PIL raises UnidentifiedImageError / OSError on bad data
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if type(exc).__name__ == "DecompressionBombError":  # PIL's own bound, met while reading the header
            n = re.search(r"\((\d+) pixels\)", msg)
            raise DataError(_too_large(p, f"{int(n.group(1)) / 1e6:.0f} megapixels" if n else msg)) from None
        if str(p).lower().endswith((".svg", ".svgz")):  # vector graphics: PIL reads raster formats only
            raise DataError(f"{p}: SVG (vector) images are not read; convert them to PNG first "
                            "(e.g. rsvg-convert -w 64 -h 64 in.svg -o out.png)") from None
        raise DataError(f"{p}: unreadable or truncated image file ({msg})") from None
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _too_large(p: Path, what: str) -> str:
    return (f"{p}: image too large ({what}; at most {MAX_IMAGE_PIXELS / 1e6:g} megapixels are read): "
            "downscale it, or leave it out with --skip-bad")


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """``uint8 [n, 3, H, W]`` -> ``float [n, 3, H, W]``: ``/255`` then ImageNet mean/std."""
    x = images.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def load_image(path: str | os.PathLike, size: int = 32) -> torch.Tensor:
    """Decode, resize and normalise one image.

    Returns:
        ``float [3, size, size]`` normalised with ImageNet mean/std.

    Raises:
        DataError: missing, unreadable or truncated image (names the file).
    """
    return normalize_images(load_image_uint8(path, size)[None])[0]


def as_uint8(a: np.ndarray) -> np.ndarray:
    """Image values on the 0-255 ``uint8`` scale, by the array's dtype (see :func:`images_from_arrays`)."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.size == 0:
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise DataError("image arrays hold non-finite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"float image arrays must hold values in [0, 1] (got {lo:g} to {hi:g}); for the 0-255 "
                            "scale give uint8 arrays (array.astype('uint8'))")
        return np.rint(a * 255.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if a.dtype == np.uint16:
            return np.rint(a.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        if lo < 0 or hi > 255:
            raise DataError(f"integer image arrays must hold values in 0-255 (got {lo} to {hi}; uint16 arrays are "
                            "read as 0-65535)")
        return a.astype(np.uint8)
    raise DataError(f"image arrays must hold numbers (got dtype {a.dtype})")


def images_from_arrays(arrays: Any, size: int = 32) -> torch.Tensor:
    """Already-decoded RGB images -> ``uint8 [n, 3, size, size]``.

    Args:
        arrays: array ``[n, H, W, 3]`` (HWC, as CIFAR rows reshaped) or a sequence of ``[H, W, 3]``
            arrays of one shape: ``uint8`` (0-255), ``uint16`` (0-65535), other integers in 0-255,
            or floats in [0, 1] (as ``skimage.img_as_float`` or ``ToTensor`` give them).
        size: output side; resized bilinearly when it differs from ``H``/``W``.

    Raises:
        DataError: another shape, non-finite values, or values outside the dtype's range (a float
            array in 0-255 is refused rather than read as mostly white).
    """
    a = np.asarray(arrays) if not isinstance(arrays, np.ndarray) else arrays
    if a.ndim != 4 or a.shape[-1] != 3:
        raise DataError(f"image arrays must be [n, H, W, 3], got shape {tuple(a.shape)}")
    x = torch.from_numpy(np.ascontiguousarray(as_uint8(a).transpose(0, 3, 1, 2)))
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
        x = x.round().clamp_(0, 255).to(torch.uint8)
    return x
