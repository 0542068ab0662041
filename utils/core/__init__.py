"""The ground floor: errors, the one atomic writer, the command-line frame, path checks, devices.

Imports nothing of the project, so ``models/`` and every other group can build on it.
"""
