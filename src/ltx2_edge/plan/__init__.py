"""The memory planner: checkpoint headers + request + budget -> a ``Plan``, as pure arithmetic.

Everything here runs on a laptop without a GPU and must never import torch or ltx-core (``tests/test_layout.py``
imports every module of this package in a fresh interpreter and checks), never read a weight and never touch a
device. Device facts come in as a ``DeviceProfile`` and a ``Budget``; the torch side that measures them is
``memory/runtime.py``.
"""
