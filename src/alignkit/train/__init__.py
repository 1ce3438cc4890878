"""The training loop (Accelerate) and one thin method per family.

The package is also the Python API's ``alignkit.train(...)``: calling it calls
:func:`alignkit.api.train`. (A plain function named ``train`` in ``alignkit`` would be
replaced by this package the first time any ``alignkit.train.*`` module is imported.)
"""

import importlib
import sys
import types


def _api_train():
    """The API's train, looked up by name: the API sits above this package and uses it."""
    return importlib.import_module("alignkit.api").train


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return _api_train()(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect

        return inspect.signature(_api_train())


sys.modules[__name__].__class__ = _CallablePackage
