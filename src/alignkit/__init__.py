"""alignkit: align generative language models with human feedback.

The math lives in ``alignkit.losses`` (pure functions over ``[B, K]`` tensors), the
hot path in ``alignkit.engine`` (sequence log-probs of K responses per prompt), and
the thin trainers in ``alignkit.train``. Heavy dependencies are imported lazily so
that ``import alignkit.losses`` needs torch alone.
"""

__version__ = "0.1.0"
