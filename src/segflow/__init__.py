"""segflow: image segmentation from labelled data to a served model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("segflow")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
