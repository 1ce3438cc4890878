"""Pure loss functions over ``[B, K]`` tensors, one small module per family.

``LOSSES`` maps a method name to its function ``fn(batch: RankedBatch, **hp) ->
(losses [B], metrics)``. Importing this package needs torch alone.
"""

from alignkit.losses import listwise, preference, reward  # noqa: F401  (fill the registry)
from alignkit.losses.batch import RankedBatch
from alignkit.losses.reduce import global_mean
from alignkit.losses.registry import LOSSES, check_hyperparameters, get_loss, hyperparameters, register_loss

__all__ = [
    "LOSSES",
    "RankedBatch",
    "check_hyperparameters",
    "get_loss",
    "global_mean",
    "hyperparameters",
    "register_loss",
]
