"""Open untrusted images: an allow-list of Pillow decoders under a pixel cap, failures coded."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from tasks import detect
from tasks.errors import CorruptFile, TooLarge, UnsupportedFormat

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
# an EXR may hold many channels per pixel: cap the samples read, as four channels at the pixel cap
MAX_EXR_SAMPLES_PER_PIXEL = 4
MAX_EXR_CHANNELS = 64

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


@dataclass(frozen=True)
class ExrImage:
    """The part of an OpenEXR file shown: linear colour (rows, columns, 3), optional alpha;
    `channels` describes every part's."""

    width: int
    height: int
    channels: tuple[tuple[str, str], ...]  # (name, "half" | "float" | "uint"), names sanitised
    parts: int
    colour: NDArray[np.float32]
    alpha: NDArray[np.float32] | None


def open_exr(source: Path, max_pixels: int, *, what: str = "image") -> ExrImage:
    """Read an OpenEXR file, refusing by its header (before any pixel) more than `max_pixels`."""
    import OpenEXR  # heavy, and only the EXR path needs it

    label = safe_label(what)
    try:
        header_file = OpenEXR.File(str(source), header_only=True)
        headers = [part.header for part in header_file.parts]
    except Exception as error:  # the binding raises RuntimeError, ValueError... on bad bytes
        raise CorruptFile(f"The {label} is not a readable OpenEXR image.") from error
    pixels, samples = 0, 0
    for header in headers:
        if header.get("type") in (OpenEXR.deepscanline, OpenEXR.deeptile):
            raise UnsupportedFormat(f"The {label} is a deep OpenEXR image, not supported.")
        width, height = _data_window(header, label)
        channels = len(header.get("channels", ()))
        if channels > MAX_EXR_CHANNELS:
            raise TooLarge(f"The {label} has {channels} channels; the limit is {MAX_EXR_CHANNELS}.")
        pixels += width * height
        samples += width * height * channels
    if not headers:
        raise CorruptFile(f"The {label} holds no OpenEXR image.")
    if pixels > max_pixels:
        raise TooLarge(f"The {label} has {pixels:,} pixels; the limit is {max_pixels:,} pixels.")
    if samples > max_pixels * MAX_EXR_SAMPLES_PER_PIXEL:
        raise TooLarge(
            f"The {label} has {samples:,} samples; the limit is "
            f"{max_pixels * MAX_EXR_SAMPLES_PER_PIXEL:,} samples."
        )
    try:
        parts = [part.channels for part in OpenEXR.File(str(source), separate_channels=True).parts]
    except MemoryError:
        raise
    except Exception as error:
        raise CorruptFile(f"The {label} is damaged and cannot be decoded as OpenEXR.") from error
    if len(parts) != len(headers):  # a truncated file reads as fewer parts, or none
        raise CorruptFile(f"The {label} is damaged and cannot be decoded as OpenEXR.")
    # the first part that has colour is shown (a render's "beauty" after its depth, say)
    shown = next((i for i, channels in enumerate(parts) if _colour_layer(channels)), 0)
    width, height = _data_window(headers[shown], label)
    described = [(safe_label(str(name)), channel.type().name.lower())
                 for channels in parts for name, channel in channels.items()]
    return _exr_image(parts[shown], width, height, described, len(parts), label)


def _colour_layer(names: Iterable[str]) -> tuple[list[str], str | None] | None:
    """The R, G, B channels of the first colour layer by name (the unnamed one first), and its
    alpha; None without one. Layers are the channel names' prefixes: "diffuse.R"."""
    layers: dict[str, dict[str, str]] = {}
    for name in names:
        prefix, _, last = str(name).rpartition(".")
        layers.setdefault(prefix, {})[last.upper()] = str(name)
    for prefix in sorted(layers):  # "" sorts first
        found = layers[prefix]
        if {"R", "G", "B"} <= found.keys():
            return [found["R"], found["G"], found["B"]], found.get("A")
    return None


def _data_window(header: dict[str, Any], label: str) -> tuple[int, int]:
    try:
        low, high = header["dataWindow"]
        width = int(high[0]) - int(low[0]) + 1
        height = int(high[1]) - int(low[1]) + 1
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise CorruptFile(f"The {label} has no readable OpenEXR data window.") from error
    if width < 1 or height < 1:
        raise CorruptFile(f"The {label} has an empty OpenEXR data window.")
    return width, height


def _exr_image(
    channels: dict[str, Any], width: int, height: int, described: list[tuple[str, str]],
    parts: int, label: str,
) -> ExrImage:
    """The colour (and alpha) to show of one part's channels: its first colour layer, else its
    luminance (Y), else its first channel that is not an alpha."""
    planes: dict[str, NDArray[np.float32]] = {}
    for name, channel in channels.items():
        pixels = np.asarray(channel.pixels)
        kind = channel.type().name.lower()
        if pixels.shape != (height, width):  # subsampled (chroma) channels are not shown
            continue
        plane = np.nan_to_num(pixels.astype(np.float32), nan=0.0, posinf=65504.0, neginf=0.0)
        if kind == "uint":  # ids or counts, not light: spread them over 0..1 to be seen
            plane /= max(float(plane.max()), 1.0)
        planes[str(name)] = plane
    layer = _colour_layer(planes)
    alpha_name: str | None = "A"
    if layer is not None:
        rgb, alpha_name = layer
        colour = np.dstack([planes[name] for name in rgb])
    elif planes:
        opaque = [n for n in planes if n.rpartition(".")[2].upper() != "A"] or list(planes)
        grey = planes.get("Y", planes[opaque[0]])
        colour = np.dstack([grey, grey, grey])
    else:
        raise CorruptFile(f"The {label} has no full-resolution channel to show.")
    alpha = planes.get(alpha_name) if alpha_name else None
    return ExrImage(width, height, tuple(described), parts, colour, alpha)


def tone_map(exr: ExrImage) -> tuple[Image.Image, float]:
    """An 8-bit sRGB image of linear EXR colour, and the exposure (stops) applied before clamping.

    The exposure brings the 99th percentile of the brightest channel to 1 when it is above 1,
    so texture data (0..1) is shown as is and HDR light is not all white.
    """
    colour = np.maximum(exr.colour, 0.0)
    peak = float(np.percentile(colour.max(axis=-1), 99)) if colour.size else 0.0
    scale = 1.0 / peak if peak > 1.0 else 1.0
    encoded = linear_to_srgb(np.clip(colour * scale, 0.0, 1.0))
    bands = [np.round(encoded * 255.0).astype(np.uint8)]
    if exr.alpha is not None:
        bands.append(np.round(np.clip(exr.alpha, 0.0, 1.0) * 255.0).astype(np.uint8)[..., None])
    image = Image.fromarray(np.concatenate(bands, axis=-1))
    return image, float(np.log2(scale))


def linear_to_srgb(linear: NDArray[Any]) -> NDArray[np.float64]:
    """The sRGB transfer function on values in 0..1."""
    linear = np.asarray(linear, dtype=np.float64)
    low = linear * 12.92
    high = 1.055 * np.power(np.maximum(linear, 0.0031308), 1.0 / 2.4) - 0.055
    return np.where(linear <= 0.0031308, low, high)


def srgb_to_linear(encoded: NDArray[Any]) -> NDArray[np.float64]:
    """The inverse sRGB transfer function on values in 0..1."""
    encoded = np.asarray(encoded, dtype=np.float64)
    return np.where(
        encoded <= 0.04045, encoded / 12.92, np.power((encoded + 0.055) / 1.055, 2.4)
    )
