"""Promptable segmentation: points, a box or a coarse mask in; masks with scores out.

- :mod:`segflow.prompt.base`: :class:`~segflow.prompt.base.Prompt`,
  :class:`~segflow.prompt.base.PromptResult`, the :class:`~segflow.prompt.base.PromptBackend`
  interface, the :data:`~segflow.prompt.base.PROMPT_BACKENDS` registry and
  :func:`~segflow.prompt.base.create_prompt_backend` (``grabcut``, ``sam:PATH``, ``sam2:PATH``).
- :mod:`segflow.prompt.cache`: the LRU image-embedding cache (byte-accounted).
- :mod:`segflow.prompt.grabcut`, :mod:`segflow.prompt.sam`, :mod:`segflow.prompt.sam2`: backends.
- :mod:`segflow.prompt.onnx`: ONNX export of the SAM mask decoder, with a parity check.
- :mod:`segflow.prompt.export`: index PNG, COCO JSON and LabelMe JSON writers.
- :mod:`segflow.prompt.predict`: the ``segflow predict prompt:...`` batch kind.

Heavy libraries (torch, OpenCV, segment_anything, sam2) are imported by the backend modules
only, on first use. Guide: docs/prompt.md.
"""
