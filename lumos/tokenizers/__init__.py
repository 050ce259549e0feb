"""Video and text tokenizers (LUMOS_SPEC §3): protocol, our FSQ conv tokenizer, Cosmos adapter, text tokenizers."""

from lumos.tokenizers.causal_conv import ConvTokenizerConfig, tokenizer_preset
from lumos.tokenizers.fsq import FSQ, FSQ_LEVELS
from lumos.tokenizers.text import ByteTokenizer, HFTextTokenizer, TextTokenizer, load_text_tokenizer
from lumos.tokenizers.video import (
    ConvVideoTokenizer,
    VideoTokenizer,
    build_video_tokenizer,
    default_tokenizer_uri,
    load_video_tokenizer,
    save_video_tokenizer,
)

__all__ = [
    "FSQ", "FSQ_LEVELS", "ByteTokenizer", "ConvTokenizerConfig", "ConvVideoTokenizer", "HFTextTokenizer",
    "TextTokenizer", "VideoTokenizer", "build_video_tokenizer", "default_tokenizer_uri", "load_text_tokenizer",
    "load_video_tokenizer", "save_video_tokenizer", "tokenizer_preset",
]
