"""``alignkit demo``: sentiment steering of a tiny review model, end to end on a CPU.

- :mod:`alignkit.demo.corpus`: the built-in generator of short reviews (an offline IMDB);
- :mod:`alignkit.demo.pipeline`: pretrain (cached), preference data, reward model, compare;
- :mod:`alignkit.demo.cli`: the ``alignkit demo`` sub-command.
"""
