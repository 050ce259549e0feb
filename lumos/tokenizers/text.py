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


def free_text_ids(layout: VocabLayout) -> range:
    """Text ids of ``layout`` that no special, number or byte token uses (compact: 8..127), where a small learned
    word vocabulary can live."""
    specials = [layout.bos, layout.pad, layout.sep, layout.boi, layout.eoi, layout.newline, layout.mask,
                layout.video_begin, layout.video_end]
    lo = max(specials) + 1
    hi = min(x for x in (layout.num_zero, layout.byte_offset if layout.byte_offset >= 0 else layout.text_vocab_size)
             if x >= lo)
    return range(lo, hi)


def train_word_tokenizer(texts, layout: VocabLayout, min_count: int = 1) -> str:
    """Learn a word-level vocabulary (HF ``tokenizers`` WordLevel, whitespace + punctuation pre-tokenizer) from
    ``texts`` and place it in the layout's free text ids (:func:`free_text_ids`), unknown words mapping to
    ``[UNK]``. Captions from a small grammar then cost one token per word instead of one per byte.

    Returns:
        the tokenizer JSON (load it with :func:`load_text_tokenizer`).

    Raises:
        ValueError: the vocabulary does not fit the free ids (raise ``min_count``) or no texts.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    ids = free_text_ids(layout)
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]"], min_frequency=min_count)
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainer)
    learned = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])  # [UNK] first, then by frequency
    if len(learned) < 2:
        raise ValueError("train_word_tokenizer: no words in the texts")
    if len(learned) > len(ids):
        raise ValueError(f"train_word_tokenizer: {len(learned)} words do not fit the {len(ids)} free ids of layout "
                         f"{layout.name!r} (raise min_count)")
    placed = Tokenizer(models.WordLevel(vocab={w: ids[i] for i, (w, _) in enumerate(learned)}, unk_token="[UNK]"))
    placed.pre_tokenizer = pre_tokenizers.Whitespace()
    return placed.to_str(pretty=True)


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
