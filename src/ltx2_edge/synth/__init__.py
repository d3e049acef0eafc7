"""Writing random-weight files in the official formats: the checkpoint, the Gemma folder, the upsampler, LoRAs.

Tests, the demo and GPU benchmarks run on these files (no machine here can download weights). This package is the
only one that writes model files (``quant/convert.py`` aside, which rewrites a real one); it never reads a file it
did not write except through ``checkpoint/`` and never replaces a file it did not write.
"""
