"""Collect human feedback in the browser and export it as alignkit training data (``alignkit label``)."""
