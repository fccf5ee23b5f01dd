"""Neural networks: DA3 (any-view, mono, metric, nested) and their shared ViT/DPT building blocks."""
