"""The ``--tta [VIEWS]`` option of ``evaluate`` and ``predict``: a flag with an optional value.

``--tta`` alone, or no ``--tta`` at all, means "the views the model was validated with"
(stored in its checkpoint, see :meth:`segflow.models.meta.CheckpointMeta.resolve_tta`);
``--tta none|hflip|vflip|flip`` (or ``--tta=flip``) overrides it.

typer cannot declare an option whose value is optional, so :func:`expand_bare_flags` rewrites
a bare ``--tta`` (one not followed by a view name) to ``--tta=checkpoint`` before parsing.
"""

from __future__ import annotations

from segflow.errors import ConfigError
from segflow.models.meta import TTA_FROM_CHECKPOINT

TTA_FLAG = "--tta"
TTA_CHOICES = (TTA_FROM_CHECKPOINT, "none", "hflip", "vflip", "flip")
TTA_HELP = (
    "Test-time augmentation: none, hflip, vflip or flip (both); "
    "--tta alone or no --tta: what the checkpoint was validated with."
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
        ConfigError: A value that is not one of :data:`TTA_CHOICES`.
    """
    if value is None:
        return TTA_FROM_CHECKPOINT
    if value not in TTA_CHOICES:
        raise ConfigError(f"--tta {value!r} is invalid; use one of {', '.join(TTA_CHOICES)} (or --tta alone)")
    return value
