"""Several GPUs of one host for one clip.

CFG parallel (``--cfg-parallel``): the guidance passes of each step split across processes. ``env`` keeps NVLink
multicast off in every rank's environment; ``ranks`` checks the flag against the request and the machine
(torch-free); ``cfg_split`` shares a step's passes and gathers their outputs; ``worker`` is one rank's run;
``launch`` starts the ranks and collects what they did; ``summary`` prints it.

Sequence parallel (``ulysses``): the video tokens of each forward split across processes through ltx-core's own
attention functions; a building block, measured by ``bench/sequence_parallel.py``, not yet behind a flag.

Layer 3: ``worker`` drives the engine (``pipeline.Generator``) and the CLI drives ``launch``; nothing below the
engine imports this package.
"""
