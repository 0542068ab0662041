"""Library code behind the scripts, grouped by concept (one sub-package per face of the house).

Import rules (``tests/test_layout.py`` fails when one is broken; docs/layout.md explains them):

* ``core`` (errors, atomic writes, cli, paths, device) imports nothing of the project;
* ``models/`` imports only ``utils.core``;
* ``data`` (images, rain, datasets) imports ``core``;
* ``inference`` (restore, tiling, outputs) imports ``core`` and ``data``;
* ``eval`` (metrics, protocol, folders, heldout) imports ``core``, ``data`` and ``inference``;
* ``efficiency`` (energy, benchmark) imports ``core``, ``data`` and ``models``; the benchmark also
  reads train.py's defaults from ``train.config`` (what "default" means is train.py's);
* ``train`` may import every group below it and ``models``;
* nothing in ``models/`` or ``utils/`` imports a script or a tool.
"""
