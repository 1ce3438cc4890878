"""alignkit: align generative language models with human feedback.

The math lives in ``alignkit.losses`` (pure functions over ``[B, K]`` tensors), the
hot path in ``alignkit.engine`` (sequence log-probs of K responses per prompt), and
the thin trainers in ``alignkit.train``, and the Python API in ``alignkit.api``
(``alignkit.train("dpo", model=model, train_data=dataset, loss={"beta": 0.1})``). Heavy dependencies are imported lazily so
that ``import alignkit.losses`` needs torch alone.
"""

__version__ = "0.1.0"

# The Python API (see alignkit.api): alignkit.train(...), evaluate, compare, generate, score, soup.
# ``alignkit.train`` is the training package, made callable; the rest load on first use.
_API = ("evaluate", "compare", "generate", "score", "soup", "Run", "Samples", "train_config")


def __getattr__(name: str):
    import importlib

    if name == "train":
        return importlib.import_module("alignkit.train")
    if name in _API:  # the top layer, looked up by name: this package depends on nothing above it
        return getattr(importlib.import_module("alignkit.api"), name)
    raise AttributeError(f"module 'alignkit' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "train", *_API])
