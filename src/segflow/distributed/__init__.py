"""segflow.distributed: scale-out on existing engines.

- :mod:`segflow.distributed.ray_predict`: ``segflow predict ... --ray``, batch inference over
  an archive on Ray Data (an actor pool of Predictors, one model load per actor).
- :mod:`segflow.distributed.launch`: the one reader of a launcher's topology (``torchrun``,
  SLURM ``srun``) for multi-node Lightning DDP training and distributed evaluation.
"""
