"""The engine's parts: run settings, the resolved setup, the run plan, stage scopes and the stage runners.

``ltx2_edge.pipeline.Generator`` composes them; a scheduler (the service) drives the same parts directly.
"""
