"""Data: records of the Video-R1 JSON family, video decoding and frame sampling, prompts, CLEVRER."""
