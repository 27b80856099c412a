"""Instance segmentation: one mask, class and score per object (docs/kinds.md).

Two paths: Mask R-CNN from torchvision (``task: instance`` in a training config), and
instances from a semantic model by connected components or distance-transform watershed
(the cells and nuclei case). Scored with pycocotools' ``COCOeval``.
"""
