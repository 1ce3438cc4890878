"""The training loop (Accelerate) and one thin method per family.

The package is also the Python API's ``alignkit.train(...)``: calling it calls
:func:`alignkit.api.train`. (A plain function named ``train`` in ``alignkit`` would be
replaced by this package the first time any ``alignkit.train.*`` module is imported.)
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from alignkit.api import train

        return train(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect

        from alignkit.api import train

        return inspect.signature(train)


sys.modules[__name__].__class__ = _CallablePackage
