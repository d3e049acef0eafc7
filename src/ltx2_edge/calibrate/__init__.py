"""Measuring a device's rates (``ltx2-edge calibrate``), and reading, writing and choosing device profiles.

``profile_file`` (the JSON file: schema, validation, the cache and shipped folders) and ``choice`` (which profile a
run uses, and the note that says so) import no torch: the planner's side reads them on any machine. ``shapes``
(the model's GEMM and conv shapes at W1) is torch-free too. ``identity`` and ``measure`` (timed kernels) and
``command`` (the whole calibration, its progress bar and table) import torch. Importing this package imports
nothing.
"""
