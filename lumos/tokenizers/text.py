"""Text tokenizers (LUMOS_SPEC §3.2): byte-level for the ``compact`` layout, HF ``tokenizers`` JSON for
``chameleon``.

Upstream Lumos-1 uses Chameleon's BPE (65,536 ids, merged with 64,000 visual tokens into
``text_tokenizer.json``); :func:`load_text_tokenizer` opens it for the ``chameleon`` layout as
:class:`lumos.convert.chameleon_text.ChameleonTextTokenizer` (upstream's prompt ids); :class:`HFTextTokenizer`
loads any other HF tokenizers JSON from a local path or s3://. The built-in
:class:`ByteTokenizer` needs no download: token id = ``layout.byte_offset + byte`` of the UTF-8 encoding.
All encode without BOS (the sequence builder adds it).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from lumos import storage
from lumos.vocab import VocabLayout


@runtime_checkable
class TextTokenizer(Protocol):
    """``encode(text) -> list[int]`` (no BOS) and ``decode(ids) -> str``."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: id = ``layout.byte_offset + byte``.

    Args:
        layout: a layout with a byte range (``compact``).
    """

    def __init__(self, layout: VocabLayout):
        if layout.byte_offset < 0 or layout.byte_offset + 256 > layout.text_vocab_size:
            raise ValueError(f"layout {layout.name!r} has no byte range; use a HF tokenizer JSON (text_tokenizer=)")
        self.layout = layout
        self.offset = layout.byte_offset
        self.identity = {"kind": "bytes", "byte_offset": self.offset}

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of ``text`` shifted by the byte offset."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return [self.offset + b for b in text.encode("utf-8")]

    def decode(self, ids) -> str:
        """Inverse of :meth:`encode`; ids outside the byte range (special tokens) are skipped, invalid UTF-8 is
        replaced with U+FFFD."""
        data = bytes(int(i) - self.offset for i in ids if 0 <= int(i) - self.offset < 256)
        return data.decode("utf-8", errors="replace")


class HFTextTokenizer:
    """A HF ``tokenizers`` JSON (e.g. Chameleon's merged ``text_tokenizer.json``) from a local path or s3://.

    Args:
        json_uri: URI of the tokenizer JSON file.
        layout: if given, token ids must fit the layout's vocabulary.
    """

    def __init__(self, json_uri: str, layout: VocabLayout | None = None):
        from tokenizers import Tokenizer

        try:
            text = storage.read_text(json_uri)
        except FileNotFoundError:
            raise ValueError(f"text tokenizer JSON not found: {json_uri}") from None
        try:
            self.tok = Tokenizer.from_str(text)
        except Exception as e:  # tokenizers raises a bare Exception subclass
            raise ValueError(f"text tokenizer {json_uri}: not a HF tokenizers JSON ({str(e).splitlines()[0]})") from None
        size = self.tok.get_vocab_size(with_added_tokens=True)
        if layout is not None and size > layout.vocab_size:
            raise ValueError(f"text tokenizer {json_uri} has {size} ids, more than layout {layout.name!r} "
                             f"({layout.vocab_size})")
        self.identity = {"kind": "hf_json", "uri": str(json_uri), "vocab_size": size}

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


def load_text_tokenizer(uri: str | None, layout: VocabLayout) -> TextTokenizer:
    """The text tokenizer for a layout.

    * ``chameleon`` layout + ``uri``: the merged Lumos-1 ``text_tokenizer.json``, validated, as a
      :class:`~lumos.convert.chameleon_text.ChameleonTextTokenizer` — its ``encode`` of a
      :func:`lumos.sequence.format_prompt` text gives upstream's ids token for token (frame/fps numbers as
      num2tokens digit ids), so every caller that encodes ``format_prompt(...)`` (sampler, serve, tokenize jobs)
      gets the training-time ids;
    * other layouts + ``uri``: a plain HF tokenizers JSON (:class:`HFTextTokenizer`);
    * ``uri`` None: the built-in byte tokenizer (only layouts with a byte range, i.e. ``compact``).
    """
    if uri and layout.name == "chameleon":
        # lazy: importing lumos.convert loads the model and safetensors code
        from lumos.convert.chameleon_text import ChameleonTextTokenizer

        return ChameleonTextTokenizer(uri, layout)
    if uri:
        return HFTextTokenizer(uri, layout)
    if layout.byte_offset < 0:
        raise ValueError(f"layout {layout.name!r} needs a text tokenizer JSON (text_tokenizer=URI); "
                         "the byte tokenizer only fits the compact layout")
    return ByteTokenizer(layout)
