"""One module per annotation format: its reader (``segflow.data.DATASETS``) and writer
(``segflow.annotation.writers.WRITERS``). Importing this package registers them all."""

from segflow.annotation.formats import (
    camvid,
    cityscapes,
    coco,
    cvat,
    datumaro_format,
    folder,
    label_studio,
    labelme,
    via,
    voc,
)

__all__ = [
    "camvid",
    "cityscapes",
    "coco",
    "cvat",
    "datumaro_format",
    "folder",
    "label_studio",
    "labelme",
    "via",
    "voc",
]
