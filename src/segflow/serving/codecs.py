"""Bytes in, arrays out, and back: image decoding with its checks, PNG and RLE encoding.

Everything here is CPU work meant to run in a worker thread, off the event loop.

Uploads are decoded by the decoder of ``segflow predict``
(:func:`segflow.inference.bands.read_encoded_image`) and their channels adapted by the rule of
every inference input (:func:`segflow.inference.preprocess.model_channels`), so a mask from the
server equals a mask from ``segflow predict`` for every image: 16-bit images are accepted and
scaled as the model's ``normalization.max_value`` says, RGB(A) becomes grayscale by luminance
for a 1-channel model (logged as a warning).

A DICOM file (one slice, uncompressed or in a transfer syntax pydicom decodes) is read by
pydicom with its rescale slope and intercept applied (HU for CT). A model trained with an
intensity policy (``meta.data.intensity``: CT window, percentiles, z-score, band stretch) gets
its upload's raw values through that same policy (:mod:`segflow.domains.intensity`), as
``segflow predict`` applies it; percentile and z-score statistics are then those of the
uploaded slice alone, since the service sees no volume.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as coco_mask

from segflow.domains.intensity import IntensityPolicy
from segflow.errors import ConfigError, DataError, InferenceError
from segflow.inference.bands import read_encoded_image
from segflow.inference.preprocess import model_channels
from segflow.serving.errors import BadImage, PayloadTooLarge, UnsupportedImage
from segflow.serving.limits import check_pixel_count
from segflow.viz import palette_lut
from segflow.viz.palette import Color

ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF"})
"""Image formats the service decodes (first frame of multi-frame files)."""
UPLOAD_NAME = "uploaded image"
FLOAT_MODES = frozenset({"F", "F;32F", "F;16F"})
"""Pillow modes of floating-point pixels: refused (415) before decoding."""
CORRUPT_WORDS = ("truncated", "unreadable", "not a readable", "corrupt", "empty")
"""Reader messages that mean broken data (400); other reader refusals are unsupported pixels (415)."""
logger = logging.getLogger(__name__)
PNG_COMPRESS_LEVEL = 1
"""zlib level of served PNGs: masks compress well already; level 1 is several times faster."""


def open_lazily(data: bytes) -> Image.Image:
    """Opens ``data`` reading only the header: format, mode and size, no pixels.

    Raises:
        BadImage: ``data`` is empty or no known image format.
        UnsupportedImage: A format outside :data:`ACCEPTED_FORMATS`.
        PayloadTooLarge: Pillow's own decompression-bomb guard tripped on the header.
    """
    if not data:
        raise BadImage("the request carries no image: send the file as the body or as multipart field 'file'")
    if is_dicom_bytes(data):
        return _dicom_header(data)  # type: ignore[return-value]
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise PayloadTooLarge(f"image refused as a decompression bomb: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        tiff = _tiff_header(data)
        if tiff is not None:
            return tiff  # type: ignore[return-value]
        raise BadImage(
            f"the body ({len(data)} bytes) is not a decodable image ({type(err).__name__}: {err}); "
            f"send a PNG, JPEG, TIFF, BMP, WebP or GIF file, or a DICOM slice"
        ) from None
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedImage(
            f"image format {image.format} is not accepted; send one of {', '.join(sorted(ACCEPTED_FORMATS))}"
        )
    return image


@dataclass(frozen=True)
class TiffHeader:
    """The header fields of a TIFF that Pillow cannot open (extra samples, e.g. gray + alpha),
    read by tifffile: what :func:`open_lazily` callers use of a Pillow image."""

    size: tuple[int, int]
    mode: str
    format: str = "TIFF"
    tile: tuple[()] = ()

    def __enter__(self) -> TiffHeader:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


DICOM_PREAMBLE = 128
DICOM_MAGIC = b"DICM"


def is_dicom_bytes(data: bytes) -> bool:
    """Whether ``data`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    return data[DICOM_PREAMBLE : DICOM_PREAMBLE + len(DICOM_MAGIC)] == DICOM_MAGIC


def _dicom_dataset(data: bytes, pixels: bool) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError) as err:
        raise BadImage(f"the DICOM file ({len(data)} bytes) cannot be read: {err}") from None


def _dicom_header(data: bytes) -> TiffHeader:
    """Rows and columns of a DICOM slice from its header (no pixel data read)."""
    dataset = _dicom_dataset(data, pixels=False)
    rows, columns = dataset.get("Rows"), dataset.get("Columns")
    if rows is None or columns is None:
        raise UnsupportedImage(
            "the DICOM file has no image (no Rows/Columns: truncated, or not an image object); "
            "send an image slice"
        )
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise UnsupportedImage(
            "the DICOM file holds several frames (a volume); send one slice, or predict the volume "
            "with `segflow predict MODEL FILE.dcm --out DIR`"
        )
    return TiffHeader((int(columns), int(rows)), "I;16", format="DICOM")


@dataclass(frozen=True)
class PixelOrder:
    """How an upload's stored pixel grid maps to the layout the model reads (DICOM slices are
    turned to the RAS slice layout of training, :func:`segflow.domains.medical.volume.ras_pixel_order`).

    Attributes:
        order: ``(H, W)`` int64: ``model_view.ravel() = stored.ravel()[order.ravel()]``.
        stored_shape: ``(rows, columns)`` of the upload.
    """

    order: np.ndarray
    stored_shape: tuple[int, int]

    def to_stored(self, array: np.ndarray) -> np.ndarray:
        """``(..., H, W)`` in the model's layout -> ``(..., rows, columns)`` on the upload's grid."""
        flat = np.empty((*array.shape[:-2], self.order.size), dtype=array.dtype)
        flat[..., self.order.ravel()] = array.reshape(*array.shape[:-2], -1)
        return flat.reshape(*array.shape[:-2], *self.stored_shape)


@dataclass(frozen=True)
class Decoded:
    """An upload ready for the model: ``image`` ``(H, W, C)`` and, where the model reads it in
    another layout than it was stored (DICOM), the :class:`PixelOrder` that puts answers back."""

    image: np.ndarray
    pixel_order: PixelOrder | None = None


def decode_dicom(data: bytes) -> tuple[np.ndarray, PixelOrder]:
    """A single-slice DICOM file in its rescaled units (HU for CT), in the model's slice layout.

    The slice is read as ``segflow predict`` reads a DICOM file
    (:func:`segflow.domains.medical.dicom.read_dicom_file`: rescale slope and intercept, the
    geometry of ImagePositionPatient / ImageOrientationPatient) and turned to the RAS layout
    models are trained on, so the mask equals the one ``segflow predict`` writes for the file.

    Returns:
        ``(H, W, 1)`` float32 values and the :class:`PixelOrder` back to the stored grid.

    Raises:
        BadImage: Not readable, or its pixel data cannot be decoded.
        UnsupportedImage: No geometry, colour, or not an axial slice.
    """
    import tempfile

    from segflow.domains.medical.dicom import read_dicom_file
    from segflow.domains.medical.volume import ras_pixel_order, slice_stack, to_ras

    with tempfile.TemporaryDirectory(prefix="segflow-upload-") as folder:
        path = Path(folder) / "upload.dcm"
        path.write_bytes(data)
        try:
            volume = read_dicom_file(path)
            order = ras_pixel_order(volume)
        except DataError as err:
            detail = str(err).replace(f"{path}: ", "")
            if any(word in detail for word in CORRUPT_WORDS + ("cannot decode", "not a readable")):
                raise BadImage(f"the DICOM file cannot be decoded: {detail}") from None
            raise UnsupportedImage(f"the DICOM file is not accepted: {detail}") from None
    columns, rows, _ = volume.shape
    return slice_stack(to_ras(volume).data, 0), PixelOrder(order, (rows, columns))


def _tiff_header(data: bytes) -> TiffHeader | None:
    """Width, height and a Pillow-like mode of a TIFF by tifffile (header only), else None."""
    if data[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            height, width = int(page.imagelength), int(page.imagewidth)
            dtype = np.dtype(page.dtype) if page.dtype is not None else np.dtype(np.uint8)
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads either: the caller's BadImage
        return None
    # the modes the callers test: "F" refuses floats, "I;16" counts 2 bytes per sample in the cost model
    mode = "F" if dtype.kind == "f" else ("I;16" if dtype.itemsize == 2 else "L")
    return TiffHeader((width, height), mode)


def decode_image(
    data: bytes,
    max_pixels: int,
    channels: int,
    intensity: IntensityPolicy | None = None,
    slice_context: int = 0,
) -> np.ndarray:
    """The image of :func:`decode_upload` (a DICOM slice in the model's layout)."""
    return decode_upload(data, max_pixels, channels, intensity, slice_context).image


def decode_upload(
    data: bytes,
    max_pixels: int,
    channels: int,
    intensity: IntensityPolicy | None = None,
    slice_context: int = 0,
) -> Decoded:
    """Checks the header, then decodes ``data`` into the model's channel layout.

    The pixels are those ``segflow predict`` reads from the same file (EXIF orientation
    applied, palette expanded, 8 or 16 bits kept), with the channels adapted by
    :func:`segflow.inference.preprocess.model_channels`.

    Args:
        data: Encoded image file.
        max_pixels: Largest accepted ``width * height``, checked before decoding.
        channels: Model input channels, one of 1, 3, 4.
        intensity: The model's intensity policy; the decoded raw values go through it.
        slice_context: The model's 2.5-D context K (it reads 2K + 1 neighbouring slices as
            channels): an upload must then carry exactly ``channels`` channels, never adapted.

    Returns:
        :class:`Decoded`: ``(H, W, channels)`` uint8 or uint16 image (a DICOM slice turned to
        the model's slice layout, with the :class:`PixelOrder` that puts answers back).

    Raises:
        BadImage: Not an image, or truncated/corrupt pixel data.
        UnsupportedImage: Format or pixel type not accepted (float), or channels that cannot
            feed the model.
        PayloadTooLarge: More than ``max_pixels`` pixels.
    """
    with open_lazily(data) as header:
        width, height = header.size
        image_format, mode = str(header.format), str(header.mode)
    check_pixel_count(width, height, max_pixels)
    if image_format == "DICOM":
        values, order = decode_dicom(data)
        return Decoded(_adapt(_intensity(values, intensity, "DICOM"), channels, slice_context), order)
    if mode in FLOAT_MODES:
        raise UnsupportedImage(
            f"image mode {mode} ({image_format}, floating point) is not accepted; segflow takes 8- or "
            "16-bit integer pixels: convert the image"
        )
    try:
        pixels = read_encoded_image(data, image_format, UPLOAD_NAME)
    except DataError as err:
        what = f"the {image_format} image ({width}x{height})"
        if any(word in str(err) for word in CORRUPT_WORDS):
            raise BadImage(f"{what} cannot be decoded: {err}") from None
        raise UnsupportedImage(f"{what} is not accepted: {err}") from None
    return Decoded(_adapt(_intensity(pixels, intensity, image_format), channels, slice_context))


def _intensity(pixels: np.ndarray, policy: IntensityPolicy | None, image_format: str) -> np.ndarray:
    """Raw values through the model's intensity policy (unchanged without one)."""
    if policy is None:
        if image_format == "DICOM" and pixels.dtype != np.uint8:
            raise UnsupportedImage(
                "this model was trained without an intensity policy, so it cannot read DICOM values "
                "(HU); send the image as PNG/TIFF, or train with 'intensity:' in the data YAML"
            )
        return pixels
    try:
        return policy.apply(pixels)
    except ConfigError as err:
        what = f"the {image_format} image does not fit the model's intensity policy"
        raise UnsupportedImage(f"{what}: {err}") from None


def _adapt(pixels: np.ndarray, channels: int, slice_context: int = 0) -> np.ndarray:
    if slice_context and pixels.shape[2] != channels:
        raise UnsupportedImage(
            f"this model reads {channels} neighbouring slices as channels (2.5-D, context {slice_context}); "
            f"send a {channels}-channel image of consecutive slices, or segment the whole volume with "
            "`segflow predict MODEL VOLUME --out DIR`"
        )
    try:
        adapted, note = model_channels(pixels, channels, UPLOAD_NAME)
    except InferenceError as err:
        raise UnsupportedImage(str(err)) from None
    if note is not None:
        logger.warning(note)
    return adapted


def encode_png(array: np.ndarray, palette: Sequence[Color] | None = None) -> bytes:
    """In-memory PNG, the bytes ``segflow.viz.save_label_png`` / ``save_image_png`` would write.

    Args:
        array: ``(H, W)`` uint8 class indices (with ``palette``) or ``(H, W, 3)`` uint8 RGB.
        palette: Class colours; the PNG is then an 8-bit palette ("P") PNG whose pixel values
            are the class indices (ignore_index in ``segflow.viz.IGNORE_COLOR``).
    """
    image = Image.fromarray(np.ascontiguousarray(array))
    if palette is not None:
        image.putpalette(palette_lut(palette).ravel().tolist())  # turns the "L" image into "P"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def decode_label_png(data: bytes) -> np.ndarray:
    """``(H, W)`` uint8 class indices from an index PNG (as served with ``format=png``)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image, dtype=np.uint8)


def rle_encode(binary: np.ndarray) -> dict[str, Any]:
    """COCO RLE of an ``(H, W)`` boolean mask, readable by ``pycocotools.mask.decode``.

    Returns:
        ``{"size": [H, W], "counts": str}`` (counts as ASCII, column-major as COCO defines it).
    """
    rle = coco_mask.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {"size": [int(size) for size in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """``(H, W)`` uint8 0/1 mask from :func:`rle_encode`'s output."""
    counts = rle["counts"]
    encoded = {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
    return np.asarray(coco_mask.decode(encoded), dtype=np.uint8)


def labels_from_rle(classes: Sequence[dict[str, Any]], height: int, width: int, fill: int = 0) -> np.ndarray:
    """Rebuilds ``(H, W)`` class indices from the ``classes`` list of an RLE answer."""
    labels = np.full((height, width), fill, dtype=np.uint8)
    for item in classes:
        labels[rle_decode(item["rle"]).astype(bool)] = int(item["id"])
    return labels


def class_summary(
    labels: np.ndarray, top_probability: np.ndarray | None, class_names: Sequence[str], with_rle: bool
) -> list[dict[str, Any]]:
    """Per class present: id, name, pixel area, area share, mean confidence, optional RLE.

    Args:
        labels: ``(H, W)`` class indices.
        top_probability: ``(H, W)`` probability of the predicted class, or None (confidence null).
        class_names: The K class names.
        with_rle: Add the class's COCO RLE under ``"rle"``.

    Returns:
        One dict per class with at least one pixel, by class id.
    """
    num_classes = len(class_names)
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=num_classes)
    confidence_sums = None
    if top_probability is not None:
        confidence_sums = np.bincount(flat, weights=top_probability.ravel(), minlength=num_classes)
    summary = []
    for class_id in np.flatnonzero(areas[:num_classes]):
        area = int(areas[class_id])
        item: dict[str, Any] = {
            "id": int(class_id),
            "name": class_names[int(class_id)],
            "area": area,
            "share": area / flat.size,
            "confidence": None if confidence_sums is None else float(confidence_sums[class_id] / area),
        }
        if with_rle:
            item["rle"] = rle_encode(labels == class_id)
        summary.append(item)
    return summary
