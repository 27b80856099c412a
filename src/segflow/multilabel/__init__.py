"""Multi-label segmentation: one sigmoid channel per class, so a pixel may carry several classes
("lesion" inside "organ", "building" under "shadow").

- data: ``format: multilabel_folder`` (one binary PNG per class, or a multi-page TIFF) and
  ``format: multilabel_coco`` (overlapping COCO annotations), :mod:`segflow.data.readers.multilabel`;
  :mod:`segflow.multilabel.dataset` turns them into ``(image, target uint8 (K, H, W))`` pairs;
- training: ``task: multilabel`` (:mod:`segflow.multilabel.task`), BCE + Dice from smp's losses
  (:mod:`segflow.multilabel.losses`), per-class thresholds chosen on val and stored in the
  checkpoint (``task_options.thresholds``, :mod:`segflow.multilabel.metrics`);
- inference: the one :class:`segflow.inference.Predictor` (sigmoid instead of softmax, and
  ``Prediction.masks``; the rules live in :mod:`segflow.multilabel.outputs`), ``segflow predict``
  (:mod:`segflow.multilabel.predict`), ``segflow evaluate`` (:mod:`segflow.multilabel.evaluate`).

Importing this package loads nothing heavy; torch is imported by the training modules only.
"""
