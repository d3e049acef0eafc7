"""The block-streaming engine: weight sources (pinned host, file), the block layout, host I/O and the streamer.

It moves the bytes a ``Plan`` says to move, bit for bit, and never decides what to run, what stays resident or how
many blocks stream: the planner (``plan/``) decides, the model builders (``models/``) ask.
"""
