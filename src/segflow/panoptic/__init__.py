"""Panoptic segmentation: stuff and things in one map.

    merge       semantic map + instances -> segment ids and ``segments_info`` (the standard merge)
    format      COCO panoptic files: ``panoptic.json`` + PNGs with ``id = R + 256 G + 256^2 B``
    pq          panoptic quality (PQ, SQ, RQ) as the COCO panoptic API computes it
    evaluate    ``segflow evaluate --task panoptic --predictions DIR``
    task        the ``panoptic`` training task (Mask2Former, :mod:`segflow.panoptic.universal`)
    predict     the ``panoptic`` prediction kind (``segflow predict PANOPTIC_MODEL ...``)

Heavy modules load on use: ``import segflow.panoptic`` imports nothing else.
"""
