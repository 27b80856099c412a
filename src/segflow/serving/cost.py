"""What a request costs in memory, estimated from its image header before any work, and which
path (whole image or tiled) it takes. The formula is documented in docs/serving.md
("Memory budget"); every constant below is one term of it.

Notation: ``h x w`` the image as decoded, ``Hp x Wp`` the network input after padding to the
stride ``s``, ``C`` model input channels, ``K`` classes, ``A`` bytes of network activations per
input pixel (``--model-bytes-per-px``), ``t`` the tile, ``step = int(t * (1 - overlap))``,
``B`` windows per forward (``tile_batch``), ``b`` bytes per decoded sample (1 for 8-bit
images, 2 for 16-bit ones). All sizes in bytes.

    decode    = (PIL_BYTES + b * C) * h * w                     (two PIL images, the pixel array)
    answer    = LABEL_BYTES * h * w  [+ (4 * K + SUMMARY_BYTES) * h * w with probabilities (format rle/json)]
                                     [+ OVERLAY_BYTES * h * w for format=overlay]
    whole     = decode + answer + Hp * Wp * (8 * C + 16 * K + A)   [TTA: + Hp * Wp * (4 * C + 8 * K)]
    tiled     = decode + answer + engine(t)
    engine(t) = 8 * (K + 1) * (t - step) * max(w, t)          carried rows, two window rows of them
              + 4 * (K + 1) * t * t                            finished strip
              + C * t * max(w, t)                              input band
              + B * t * t * (8 * C + 16 * K + A)               one batch of windows [TTA: + (4 * C + 8 * K)]

``8 * C``: the float32 input and its padded copy; ``16 * K``: float32 logits, their crop/resize,
the softmax and its temporary. A batch of ``N`` whole images costs the sum of their estimates,
and each request reserves its own, so any batch the runner forms fits the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segflow.errors import InferenceError
from segflow.inference.options import MAX_TILE, MAX_TILE_BATCH, InferenceOptions
from segflow.inference.tiling import DEFAULT_TILE_BATCH
from segflow.inference.tta import TTAConfig
from segflow.serving.errors import ServiceError

FLOAT_BYTES = 4
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "RGB;16", "RGBA;16"})
"""Pillow modes whose pixels decode to uint16 arrays (2 bytes a sample)."""
SIXTEEN_BIT_RAW = ";16"
"""Marks a 16-bit raw mode (``"RGB;16B"``) in a Pillow decoder tile."""
PIL_BYTES = 8
"""Pillow keeps each decoded image at 4 bytes a pixel (RGB is stored as 32 bits), and the decoded
and the converted image exist at the same time before the ``(H, W, C)`` uint8 array is made."""
LABEL_BYTES = 2
"""uint8 labels plus the encoded PNG (at most about one byte per pixel at zlib level 1)."""
SUMMARY_BYTES = 24
"""Per-class summary of format rle/json: top-class probability (4), the int64 labels and float64
weights ``np.bincount`` makes (16), one class mask and its Fortran-ordered copy for RLE (2), rounded up."""
OVERLAY_BYTES = 15
"""RGB image, colours, blend, legend copy (3 bytes each) and the encoded PNG."""
INPUT_COPIES = 2
"""float32 network input and its padded (or windowed) copy."""
SCORE_COPIES = 4
"""float32 logits, their crop/resize back, the softmax and its temporary."""
TTA_INPUT_COPIES = 1
TTA_SCORE_COPIES = 2
CARRY_COPIES = 2
"""Carried rows of two window rows exist while one is handed over to the next."""
PREFERRED_TILE = 512
"""Tile of automatically tiled images (rounded down to the stride), unless the budget needs less."""


class BadOption(ServiceError):
    """A request option is outside its range (422); the message names the range."""

    status_code = 422


@dataclass(frozen=True)
class ModelShape:
    """The numbers of the served model that the cost formula needs.

    Attributes:
        channels: ``C``, network input channels.
        classes: ``K``, output classes.
        stride: ``s``, input sides must be multiples of it.
        activation_bytes_per_px: ``A``, bytes of activations per network input pixel.
    """

    channels: int
    classes: int
    stride: int
    activation_bytes_per_px: float


@dataclass(frozen=True)
class ImageHeader:
    """What the image header says, read before any pixel is decoded.

    Attributes:
        width: Pixels per row (before EXIF rotation).
        height: Rows (before EXIF rotation).
        sample_bytes: Bytes per decoded sample: 2 for 16-bit images, else 1.
    """

    width: int
    height: int
    sample_bytes: int = 1

    @classmethod
    def of(cls, width: int, height: int, mode: str, rawmode: str = "") -> ImageHeader:
        """The header of a ``width x height`` image in Pillow ``mode``.

        Args:
            width: Pixels per row.
            height: Rows.
            mode: Pillow mode (``"I;16"`` for 16-bit gray).
            rawmode: The decoder's raw mode when known (``"RGB;16B"``: a 16-bit RGB PNG, which
                Pillow reports as mode ``"RGB"``).
        """
        sixteen = mode in SIXTEEN_BIT_MODES or SIXTEEN_BIT_RAW in rawmode
        return cls(int(width), int(height), 2 if sixteen else 1)


@dataclass(frozen=True)
class Plan:
    """How one request runs and what it reserves.

    Attributes:
        options: The options the predictor runs with (``tile`` set on the tiled path).
        tiled: Whether the request takes the tiled path.
        cost: Estimated peak bytes (see the module docstring).
        what: The request in words, for messages.
    """

    options: InferenceOptions
    tiled: bool
    cost: int
    what: str


@dataclass(frozen=True)
class OptionLimits:
    """The ``tile`` and ``tile_batch`` ranges the memory budget allows, each at a stated value of
    the other (the two trade off: more windows per forward leave room for smaller ones only).

    ``/v1/model`` advertises the limits at the request defaults, and every request is checked
    against the limits at its own values, both computed by :meth:`CostModel.limits`.

    Attributes:
        stride: ``s``: a tile is a multiple of it, at least ``s``.
        max_tile: Largest tile at ``tile_batch`` (0: none fits).
        tile_batch: The ``tile_batch`` that ``max_tile`` is for.
        max_tile_batch: Most windows per forward at ``tile`` (0: none fits).
        tile: The tile that ``max_tile_batch`` is for: the request's, or the automatic tile.
    """

    stride: int
    max_tile: int
    tile_batch: int
    max_tile_batch: int
    tile: int

    def to_json(self) -> dict[str, Any]:
        """The ``limits.tile`` and ``limits.tile_batch`` entries of ``GET /v1/model``."""
        return {
            "tile": {
                "multiple_of": self.stride,
                "min": self.stride,
                "max": self.max_tile,
                "at_tile_batch": self.tile_batch,
            },
            "tile_batch": {"min": 1, "max": self.max_tile_batch, "at_tile": self.tile},
        }


def views(tta: TTAConfig | str | None) -> TTAConfig | None:
    """The TTA views of an option value (the service resolves ``"checkpoint"`` before costing)."""
    return tta if isinstance(tta, TTAConfig) else None


def padded(size: int, multiple: int) -> int:
    """``size`` rounded up to a multiple of ``multiple``."""
    return -(-size // multiple) * multiple


class CostModel:
    """Request cost estimates, option ranges and the whole-or-tiled decision for one model.

    Args:
        shape: Model numbers (channels, classes, stride, activation bytes).
        whole_capacity: The most bytes one whole-image request may reserve (the pool).
        tiled_capacity: The most bytes one tiled request may reserve.
        auto_tile_pixels: Images with more padded pixels than this are tiled automatically.
    """

    def __init__(
        self, shape: ModelShape, whole_capacity: int, tiled_capacity: int, auto_tile_pixels: int
    ) -> None:
        self.shape = shape
        self.whole_capacity = whole_capacity
        self.tiled_capacity = tiled_capacity
        self.auto_tile_pixels = auto_tile_pixels

    # --- the formula ----------------------------------------------------------------------

    def _per_forward_px(self, tta: TTAConfig | None) -> float:
        """Bytes per network input pixel of one forward pass (with TTA: its views and their sum)."""
        c, k = self.shape.channels, self.shape.classes
        base = FLOAT_BYTES * (INPUT_COPIES * c + SCORE_COPIES * k) + self.shape.activation_bytes_per_px
        if tta is None:
            return base
        extra = FLOAT_BYTES * (TTA_INPUT_COPIES * c + TTA_SCORE_COPIES * k)
        largest_scale = max(1.0, *tta.scales)
        return (base + extra) * largest_scale**2

    def _image_parts(self, height: int, width: int, options: InferenceOptions, sample_bytes: int) -> float:
        """Decoded image and the answer: the costs that scale with the image on both paths."""
        pixels = height * width
        answer = LABEL_BYTES * pixels
        if options.probs:
            answer += (FLOAT_BYTES * self.shape.classes + SUMMARY_BYTES) * pixels
        if options.overlay:
            answer += OVERLAY_BYTES * pixels
        return (PIL_BYTES + sample_bytes * self.shape.channels) * pixels + answer

    def whole_cost(self, height: int, width: int, options: InferenceOptions, sample_bytes: int = 1) -> int:
        """Estimated bytes of running an ``height x width`` image whole (see the module docstring)."""
        stride = self.shape.stride
        network_px = padded(height, stride) * padded(width, stride)
        forward = network_px * self._per_forward_px(views(options.tta))
        return int(self._image_parts(height, width, options, sample_bytes) + forward)

    def engine_cost(
        self, width: int, tile: int, overlap: float, tile_batch: int, tta: TTAConfig | None
    ) -> int:
        """Estimated bytes of the tiling engine for an image ``width`` wide (independent of its height)."""
        k1, c = self.shape.classes + 1, self.shape.channels
        step = max(1, int(tile * (1.0 - overlap)))
        band_width = max(width, tile)
        carried = CARRY_COPIES * FLOAT_BYTES * k1 * (tile - step) * band_width
        strip = FLOAT_BYTES * k1 * tile * tile
        band = c * tile * band_width
        windows = tile_batch * tile * tile * self._per_forward_px(tta)
        return int(carried + strip + band + windows)

    def tiled_cost(self, height: int, width: int, options: InferenceOptions, sample_bytes: int = 1) -> int:
        """Estimated bytes of running an ``height x width`` image tiled with ``options.tile``."""
        if options.tile is None:
            raise InferenceError("internal: tiled_cost needs options with a tile")
        engine = self.engine_cost(
            width, options.tile, options.overlap, options.tile_batch, views(options.tta)
        )
        return int(self._image_parts(height, width, options, sample_bytes) + engine)

    # --- ranges derived from the budget -----------------------------------------------------

    def max_tile(self, tile_batch: int, overlap: float = 0.0, tta: TTAConfig | None = None) -> int:
        """Largest stride multiple ``t <= MAX_TILE`` whose engine (on a one-window image) fits; 0 if none."""
        stride, best = self.shape.stride, 0
        for tile in range(stride, MAX_TILE + 1, stride):
            if self.engine_cost(tile, tile, overlap, tile_batch, tta) > self.tiled_capacity:
                break
            best = tile
        return best

    def max_tile_batch(self, tile: int, overlap: float = 0.0, tta: TTAConfig | None = None) -> int:
        """Largest ``tile_batch <= MAX_TILE_BATCH`` whose engine (one-window image) fits; 0 if none."""
        best = 0
        for batch in range(1, MAX_TILE_BATCH + 1):
            if self.engine_cost(tile, tile, overlap, batch, tta) > self.tiled_capacity:
                break
            best = batch
        return best

    @property
    def preferred_tile(self) -> int:
        """:data:`PREFERRED_TILE` rounded down to a multiple of the stride (at least the stride)."""
        stride = self.shape.stride
        return max(stride, PREFERRED_TILE // stride * stride)

    def auto_tile(self, tile_batch: int, overlap: float, tta: TTAConfig | None) -> int:
        """Tile of automatically tiled images: :attr:`preferred_tile`, or less to fit the budget."""
        fitting = self.max_tile(tile_batch, overlap, tta)
        return min(self.preferred_tile, fitting) if fitting else self.preferred_tile

    def limits(
        self, tile: int | None, tile_batch: int, overlap: float, tta: TTAConfig | None
    ) -> OptionLimits:
        """The ``tile``/``tile_batch`` ranges at these option values (the one source of both
        what ``/v1/model`` advertises and what a request may ask for).

        Args:
            tile: The request's tile; None: the automatic tile at the default ``tile_batch``
                (:data:`DEFAULT_TILE_BATCH`), which the ``tile_batch`` range is then for.
            tile_batch: Windows per forward the ``tile`` range is for.
            overlap: Fraction of a window shared with its neighbour.
            tta: The TTA views (resolved; None: none).
        """
        window = tile if tile is not None else self.auto_tile(DEFAULT_TILE_BATCH, overlap, tta)
        return OptionLimits(
            stride=self.shape.stride,
            max_tile=self.max_tile(tile_batch, overlap, tta),
            tile_batch=tile_batch,
            max_tile_batch=self.max_tile_batch(window, overlap, tta),
            tile=window,
        )

    def check_ranges(self, tile: int | None, tile_batch: int, overlap: float, tta: TTAConfig | None) -> None:
        """Refuses a ``tile``/``tile_batch`` outside :meth:`limits` at these values (422 naming the range).

        Raises:
            BadOption: ``tile`` is not a stride multiple in ``[s, max_tile]``, or ``tile_batch``
                is outside ``[1, max_tile_batch]``.
        """
        limits = self.limits(tile, tile_batch, overlap, tta)
        stride = limits.stride
        if tile is not None and (tile < stride or tile > limits.max_tile or tile % stride):
            allowed = (
                f"a multiple of {stride} in [{stride}, {limits.max_tile}]"
                if limits.max_tile
                else "none (budget too small)"
            )
            raise BadOption(
                f"tile={tile} is outside the range the server allows at tile_batch={tile_batch}: "
                f"{allowed} (from the model's stride and the memory budget, --max-memory-mb)"
            )
        if not 1 <= tile_batch <= limits.max_tile_batch:
            allowed = f"[1, {limits.max_tile_batch}]" if limits.max_tile_batch else "[] (none fits)"
            raise BadOption(
                f"tile_batch={tile_batch} is outside {allowed}, the range the server's "
                f"memory budget (--max-memory-mb) allows for {limits.tile}-px tiles"
            )

    # --- the decision --------------------------------------------------------------------------

    def plan(self, header: ImageHeader, options: InferenceOptions) -> Plan:
        """Chooses the path of an image and estimates its cost, from its header alone.

        The image runs tiled when the client set ``tile``, when its padded pixel count exceeds
        ``auto_tile_pixels``, or when it could not run whole within the budget; it then costs
        the tile's engine plus its decoded size, not the whole image's forward. EXIF rotation
        may swap the sides after decoding, so the larger estimate of both orientations counts.
        """
        height, width, depth = header.height, header.width, header.sample_bytes
        stride = self.shape.stride
        what = f"a {width}x{height} image"
        if options.tile is not None:
            return self._tiled_plan(header, options, what)
        network_px = padded(height, stride) * padded(width, stride)
        whole = max(
            self.whole_cost(height, width, options, depth), self.whole_cost(width, height, options, depth)
        )
        if network_px > self.auto_tile_pixels or whole > self.whole_capacity:
            tile = self.auto_tile(options.tile_batch, options.overlap, views(options.tta))
            return self._tiled_plan(header, options.replace(tile=tile), what)
        return Plan(options, tiled=False, cost=whole, what=what)

    def _tiled_plan(self, header: ImageHeader, options: InferenceOptions, what: str) -> Plan:
        height, width, depth = header.height, header.width, header.sample_bytes
        cost = max(
            self.tiled_cost(height, width, options, depth), self.tiled_cost(width, height, options, depth)
        )
        return Plan(options, tiled=True, cost=cost, what=f"{what} tiled {options.tile}")
