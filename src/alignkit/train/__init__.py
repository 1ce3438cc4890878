"""The training loop (Accelerate) and one thin method per family."""
