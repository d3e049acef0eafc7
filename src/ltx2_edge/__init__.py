"""ltx2-edge: LTX-2 19B text-to-video+audio inside a hard memory budget.

Our code is Apache-2.0. The model code (ltx-core) and the LTX-2 weights are under the LTX-2 Community License.
"""

from ltx2_edge import _compat  # noqa: F401  (must precede any ltx_core import)

__version__ = "0.1.0"
