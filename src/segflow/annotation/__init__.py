"""Annotation formats: the shapes annotation tools export, the one rasterising function, and
the writers of every format (``segflow data convert``)."""

from segflow.annotation.writers import WRITERS, DatasetWriter, create_writer

__all__ = ["WRITERS", "DatasetWriter", "create_writer"]
