"""segflow.classical: classical segmentation methods (scikit-image, OpenCV), majority vote,
dense-CRF refinement and the ``classical`` prediction kind (docs/classical.md).

Import the parts directly (``segflow.classical.methods``, ``.vote``, ``.crf``, ``.predict``):
this package imports nothing heavy on its own.
"""
