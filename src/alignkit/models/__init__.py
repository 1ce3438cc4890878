"""Model loading, tiny builders, LoRA, reference handling, reward and value heads."""
