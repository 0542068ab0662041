"""Training: the settings, the recipe (optimizer, schedule), losses, checkpoints, DDP, the loop."""
