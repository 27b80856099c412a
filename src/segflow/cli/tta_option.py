"""The ``--tta [VIEWS]`` option of ``evaluate`` and ``predict``: a flag with an optional value.

``--tta`` alone, or no ``--tta`` at all, means "the views the model was validated with"
(stored in its checkpoint, see :meth:`segflow.models.meta.CheckpointMeta.resolve_tta`);
``--tta none|hflip|vflip|flip`` (or ``--tta=flip``) overrides it.

typer cannot declare an option whose value is optional, so :func:`expand_bare_flags` rewrites
a bare ``--tta`` (one not followed by a view name) to ``--tta=checkpoint`` before parsing.

``--upsample probs|labels`` (:func:`upsample_choice`), the other whole-image option the two
commands share, is checked here too.
"""

from __future__ import annotations

from segflow.errors import ConfigError
from segflow.inference.options import UPSAMPLE_MODES
from segflow.inference.tta import TTA_WORDS, parse_tta_option
from segflow.models.meta import TTA_FROM_CHECKPOINT

TTA_FLAG = "--tta"
TTA_CHOICES = TTA_WORDS
"""The words of the one tta parser (:func:`segflow.inference.tta.parse_tta_option`)."""
TTA_HELP = (
    "Test-time augmentation: none, hflip, vflip, flip (both; true = flip, false = none); "
    "--tta alone, --tta checkpoint or no --tta: what the checkpoint was validated with."
)

UPSAMPLE_HELP = (
    "probs: logits resized (bilinear) to the image, softmax and argmax there (default); labels: argmax "
    "at the network's resolution, labels enlarged by nearest neighbour (faster; no --tta views, --tile "
    "or --probs)."
)


def expand_bare_flags(args: list[str]) -> list[str]:
    """``[..., "--tta", "--out", "x"]`` -> ``[..., "--tta=checkpoint", "--out", "x"]``.

    A ``--tta`` followed by one of :data:`TTA_CHOICES` keeps that value; any other next
    argument (an option, an input file) is left for the parser, and the flag means
    ``checkpoint``. Arguments after ``--`` are not touched.
    """
    out: list[str] = []
    for index, arg in enumerate(args):
        if arg == "--":
            return out + args[index:]
        following = args[index + 1] if index + 1 < len(args) else None
        if arg == TTA_FLAG and following not in TTA_CHOICES:
            out.append(f"{TTA_FLAG}={TTA_FROM_CHECKPOINT}")
        else:
            out.append(arg)
    return out


def tta_choice(value: str | None) -> str:
    """The ``--tta`` value, checked (None, i.e. no ``--tta``: ``checkpoint``).

    Raises:
        ConfigError: A value the one tta parser refuses (the message lists :data:`TTA_CHOICES`).
    """
    if value is None:
        return TTA_FROM_CHECKPOINT
    try:
        parse_tta_option(value)
    except ConfigError as err:
        reason = str(err).removeprefix(f"tta={value!r} ")
        raise ConfigError(f"--tta {value!r} {reason} (or --tta alone)") from None
    return value


def upsample_choice(value: str) -> str:
    """The ``--upsample`` value, checked.

    Raises:
        ConfigError: Not one of :data:`segflow.inference.options.UPSAMPLE_MODES` (named in one line).
    """
    if value not in UPSAMPLE_MODES:
        raise ConfigError(f"--upsample {value!r} is invalid; use {' or '.join(UPSAMPLE_MODES)}")
    return value
