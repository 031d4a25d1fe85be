"""One run: its settings, the loop, one batch through the model, and what sizes, tunes and recovers it."""
