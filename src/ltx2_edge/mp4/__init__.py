"""Writing the MP4: the H.264/AAC encoder, the muxer that streams decoded frames into it, and the read back.

Output is atomic (``ltx2_edge.atomic``, shared by every output): a failure leaves no file. This package never
decodes latents and never changes a pixel or a sample beyond the stated trim/pad and clip.
"""
