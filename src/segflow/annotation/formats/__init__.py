"""One module per annotation format: its reader (``segflow.data.DATASETS``) and writer
(``segflow.annotation.writers.WRITERS``). Importing this package registers them all."""

import importlib
import importlib.util

FORMAT_MODULES = (
    "folder",
    "coco",
    "voc",
    "cityscapes",
    "camvid",
    "labelme",
    "cvat",
    "label_studio",
    "via",
    "datumaro_format",
)

for _name in FORMAT_MODULES:  # TODO(issue 10): explicit imports once every module exists
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")
