"""Several GPUs of one host for one clip: CFG parallel (the guidance passes of each step split across processes).

``env`` keeps NVLink multicast off in every rank's environment; ``ranks`` checks ``--cfg-parallel`` against the
request and the machine (torch-free); ``cfg_split`` shares a step's passes and gathers their outputs;
``worker`` is one rank's run; ``launch`` starts the ranks and collects what they did. Layer 3: it drives the
engine (``pipeline.Generator``) and is driven by the CLI; nothing below the engine imports it.
"""
