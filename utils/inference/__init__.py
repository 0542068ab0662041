"""Restoring images with a model: a batch (tiled or whole), folders of files with a manifest."""
