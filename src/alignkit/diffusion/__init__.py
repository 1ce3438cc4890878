"""Aligning diffusion models: RAFT, DDPO, D3PO and Diffusion-DPO over one denoising-chain policy.

``DIFFUSION_METHODS`` maps a method name to its pure loss (:mod:`alignkit.diffusion.losses`),
tagged with the feedback and inputs the trainer (:mod:`alignkit.diffusion.trainer`) must give it.
Importing this package needs torch alone; diffusers and scikit-learn are imported by the modules
that build models and rewards.
"""

from alignkit.diffusion import losses  # noqa: F401  (fill the registry)
from alignkit.diffusion.registry import (
    DIFFUSION_METHODS,
    check_diffusion_hyperparameters,
    diffusion_hyperparameters,
    get_diffusion_method,
    register_diffusion_method,
)

__all__ = [
    "DIFFUSION_METHODS",
    "check_diffusion_hyperparameters",
    "diffusion_hyperparameters",
    "get_diffusion_method",
    "register_diffusion_method",
]
