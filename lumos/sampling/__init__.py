"""Building blocks of the samplers (LUMOS_SPEC §8): schedule, token choice, batched KV-cached row evaluation.

The public entry points are :mod:`lumos.sampler` (AR-DF) and :mod:`lumos.ntp` (next-token comparison decoder).
"""

from lumos.sampling.rows import Branches, FrameTemplate, PaddedPlan, RowBatch, Segment, frame_template
from lumos.sampling.schedule import NoiseTemperature, keep_masked_count
from lumos.sampling.tokens import filter_logits, guided_logits, gumbel_noise, remask_lowest, sample_tokens

__all__ = ["Branches", "FrameTemplate", "NoiseTemperature", "PaddedPlan", "RowBatch", "Segment", "filter_logits",
           "frame_template", "gumbel_noise", "guided_logits", "keep_masked_count", "remask_lowest",
           "sample_tokens"]
