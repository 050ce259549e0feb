"""Vocabulary layouts: where text, special tokens and visual codes live in the merged vocabulary.

Two layouts ship:

* ``chameleon`` — upstream Lumos-1 ids exactly (LUMOS_SPEC §3.3): 129,536 ids, 65,536 text ids (Chameleon BPE),
  visual code k ↦ 65,536 + k, special tokens are Chameleon reserved tokens (``<reservedNNNNN>`` = NNNNN + 4).
* ``compact`` — our built-in layout for the byte-level text tokenizer and our own FSQ tokenizers: a few special
  ids, 128 number tokens, 256 byte tokens, then the visual codebook at offset 512.

Grid-size tokens: upstream counts 32-pixel patches (= 4 latent rows at 8× compression), so ``grid_unit=4``; the
compact layout counts latent rows directly (``grid_unit=1``) so that tiny CPU-sized grids need not be multiples
of 4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, kw_only=True)
class VocabLayout:
    """Ids of every token role in the merged vocabulary."""

    name: str
    text_vocab_size: int
    """Number of ids reserved for text + special tokens (visual ids start at ``visual_offset``)."""
    visual_offset: int
    codebook_size: int
    """Number of discrete visual codes (e.g. 64,000 for Cosmos DV4x8x8)."""
    bos: int
    pad: int
    sep: int
    """Turn separator (upstream ``<reserved08706>`` = 8710)."""
    boi: int
    """Frame begin (``<racm3:break>`` = 8197)."""
    eoi: int
    """Frame end (``<eoss>`` = 8196)."""
    newline: int
    """Row end (``<reserved08799>`` = 8803)."""
    num_zero: int
    """Number n ↦ ``num_zero + n`` (grid sizes, duration, fps)."""
    num_max: int
    """Largest number representable by a single number token."""
    mask: int
    video_begin: int
    video_end: int
    grid_unit: int
    """Latent rows/cols per grid-size unit (upstream 4: grid tokens count 32-px patches)."""
    byte_offset: int = -1
    """Compact layout only: byte b ↦ ``byte_offset + b`` for the built-in byte-level text tokenizer."""

    def __post_init__(self) -> None:
        if self.visual_offset < self.text_vocab_size:
            raise ValueError(f"vocab layout {self.name}: visual_offset must be >= text_vocab_size")
        specials = [self.bos, self.sep, self.boi, self.eoi, self.newline, self.mask, self.video_begin,
                    self.video_end]
        if max(specials) >= self.text_vocab_size or self.num_zero + self.num_max >= self.text_vocab_size:
            raise ValueError(f"vocab layout {self.name}: special ids must lie below text_vocab_size")

    @property
    def vocab_size(self) -> int:
        """Total rows of the embedding / lm_head."""
        return self.visual_offset + self.codebook_size

    def num_token(self, n: int) -> int:
        """The token id that spells the number ``n`` (grid sizes, duration, fps)."""
        if not 0 <= n <= self.num_max:
            raise ValueError(f"number {n} outside the range 0..{self.num_max} of layout {self.name}")
        return self.num_zero + n

    def token_num(self, token_id: int) -> int:
        """Inverse of :meth:`num_token`."""
        n = int(token_id) - self.num_zero
        if not 0 <= n <= self.num_max:
            raise ValueError(f"token {token_id} is not a number token of layout {self.name}")
        return n

    def to_dict(self) -> dict:
        return asdict(self)


def chameleon_layout() -> VocabLayout:
    """Upstream Lumos-1 / Chameleon ids (LUMOS_SPEC §3.3), vocabulary 129,536."""
    return VocabLayout(
        name="chameleon", text_vocab_size=65536, visual_offset=65536, codebook_size=64000,
        bos=0, pad=0, sep=8710, boi=8197, eoi=8196, newline=8803, num_zero=8804, num_max=194,
        mask=9003, video_begin=9004, video_end=9005, grid_unit=4,
    )


def compact_layout(codebook_size: int) -> VocabLayout:
    """Built-in layout for the byte-level text tokenizer and our own FSQ video tokenizers."""
    return VocabLayout(
        name="compact", text_vocab_size=512, visual_offset=512, codebook_size=codebook_size,
        bos=0, pad=0, sep=1, boi=2, eoi=3, newline=4, mask=5, video_begin=6, video_end=7,
        num_zero=128, num_max=127, grid_unit=1, byte_offset=256,
    )


def build_layout(name: str, codebook_size: int | None = None) -> VocabLayout:
    """Layout by name. ``codebook_size`` is required for ``compact`` and must be 64,000 for ``chameleon``."""
    if name == "chameleon":
        layout = chameleon_layout()
        if codebook_size not in (None, layout.codebook_size):
            raise ValueError(f"chameleon layout has 64000 visual codes, got codebook_size={codebook_size}")
        return layout
    if name == "compact":
        if not codebook_size or codebook_size <= 0:
            raise ValueError("compact layout needs a positive codebook_size")
        return compact_layout(codebook_size)
    raise ValueError(f"unknown vocab layout {name!r} (choose 'chameleon' or 'compact')")


def layout_from_dict(d: dict) -> VocabLayout:
    """Rebuild a layout saved with :meth:`VocabLayout.to_dict`."""
    return VocabLayout(**d)
