"""Open untrusted images: an allow-list of Pillow decoders under a pixel cap, failures coded."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tasks import detect
from tasks.errors import CorruptFile, TooLarge

# Kiln format -> the one Pillow decoder allowed to read it
PILLOW_FORMATS: dict[str, str] = {
    "png": "PNG",
    "jpeg": "JPEG",
    "tga": "TGA",
    "tiff": "TIFF",
    "webp": "WEBP",
    "bmp": "BMP",
    "gif": "GIF",
}
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
MAX_LABEL = 80

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


@contextmanager
def pixel_limit(max_pixels: int, *, what: str = "image") -> Iterator[None]:
    """Pillow's bomb check at `max_pixels`, its warning raised as an error; both become TooLarge."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        found = _BOMB_PIXELS.search(str(error))
        pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels"
        raise TooLarge(
            f"The {safe_label(what)} has {pixels}; the limit is {max_pixels:,} pixels."
        ) from error
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def open_image(
    source: Path | bytes,
    max_pixels: int,
    formats: Iterable[str] | None = None,
    *,
    what: str = "image",
) -> Image.Image:
    """Open and load an image (its first frame) with one allowed decoder, under the pixel cap.

    `formats` are kiln format names (None: every one of PILLOW_FORMATS). With one format only its
    decoder is tried; with several, the bytes choose one (`sniff_image_format`), which must be
    allowed.
    Raises TooLarge for a bomb, CorruptFile for damaged bytes or a format not allowed.
    """
    allowed = list(PILLOW_FORMATS) if formats is None else list(formats)
    label = safe_label(what)
    unknown = [name for name in allowed if name not in PILLOW_FORMATS]
    if unknown or not allowed:
        raise CorruptFile(f"The {label} is not in an image format Kiln opens.")
    # bytes in memory: the returned image never holds an open file (multi-frame images seek later)
    data = source if isinstance(source, bytes) else source.read_bytes()
    if len(allowed) == 1:
        chosen = allowed[0]
    else:
        sniffed = sniff_image_format(data)
        if sniffed is None or sniffed not in allowed:
            raise CorruptFile(f"The {label} is not an image in a format Kiln opens.")
        chosen = sniffed
    with pixel_limit(max_pixels, what=what), _decoding(chosen, label):
        image = Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[chosen]])
        image.load()
    return image


@contextmanager
def _decoding(fmt: str, label: str) -> Iterator[None]:
    """Turn any decoder failure into CorruptFile: a bad image is the file's fault, not a crash."""
    try:
        with warnings.catch_warnings():
            # Pillow warns about odd but readable files (EXIF, palettes); the bomb stays an error
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombWarning, Image.DecompressionBombError, MemoryError):
        raise
    except UnidentifiedImageError as error:
        raise CorruptFile(f"The {label} is not a readable {fmt.upper()} image.") from error
    except Exception as error:  # Pillow's decoders raise many kinds on hostile bytes
        message = f"The {label} is damaged and cannot be decoded as {fmt.upper()}."
        raise CorruptFile(message) from error


def sniff_image_format(data: bytes) -> str | None:
    """The kiln format (a key of PILLOW_FORMATS) of image bytes, or None.

    TGA has no magic number: it is recognised only when its header is consistent with
    `len(data)` as the file size (pass the whole file) or the data ends with the TGA 2.0 footer.
    """
    head = data[: detect.HEAD_BYTES]
    tail = data[-detect.TAIL_BYTES :]
    found = detect._classify(head, tail, len(data))
    if found is None or found.kind != "texture" or found.format not in PILLOW_FORMATS:
        return None
    return found.format


def to_display(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of `image` (RGBA when it has alpha), for thumbnails and previews."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        samples = np.asarray(image, dtype=np.float64)
        finite = samples[np.isfinite(samples)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if mode.startswith("I;16"):  # use the full 16-bit scale, like a viewer would
            low, high = 0.0, 65535.0
        scaled = np.nan_to_num((samples - low) * (255.0 / max(high - low, 1e-12)))
        grey = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
        return grey.convert("RGB")
    if mode in ALPHA_MODES or "transparency" in image.info:
        return image.convert("RGBA")
    try:
        return image.convert("RGB")
    except ValueError:  # a mode Pillow cannot turn into RGB (LAB, HSV...): show its first band
        return image.getchannel(0).convert("RGB")


def safe_label(text: str) -> str:
    """`text` made fit for a message: printable ASCII, at most MAX_LABEL characters."""
    cleaned = _UNPRINTABLE.sub("?", text)
    return cleaned if len(cleaned) <= MAX_LABEL else cleaned[: MAX_LABEL - 3] + "..."
