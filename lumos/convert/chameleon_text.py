"""The merged Lumos-1 text tokenizer and the upstream prompt tokens (LUMOS_SPEC §3.2, §3.3, §4).

``text_tokenizer.json`` (HF ``Alibaba-DAMO-Academy/Lumos-1``) is Chameleon's BPE (65,536 ids) plus 64,000 visual
tokens ``VIDVID<k in letters A..J>Z`` at ids 65,536 + k. The file written by upstream's
``create_cosmos_codebook.py`` has ``"version": "2.0"`` and the visual tokens appended to ``added_tokens`` as ONE
nested list; HF ``tokenizers`` rejects both, so :func:`sanitize_tokenizer_json` normalises them (version "1.0",
flat ``added_tokens``) without touching any id. :func:`check_merged_tokenizer` then fails loudly when the special
or visual ids are not where Lumos-1 expects them (upstream issue #1: a tokenizer without the visual tokens).

How upstream turns the spec §4 prompt into ids, and how we reproduce it token for token:

* the resolution ``"{W}x{H}"`` is substituted into the text before tokenization (pre-tokenization step);
* the frame count and fps are NOT text: the text holds the added tokens ``<video_frames_placeholder>`` /
  ``<video_fps_placeholder>``, which split the string — the BPE sees ``"... consisting of "``, ``" frames at "``
  and ``" frames per second, according to ...\\n {caption}"`` as separate pieces — and at train time each
  placeholder id is replaced by one token per decimal digit, ``data/num2tokens.json``: digit d ↦ 16,399 + d.

:class:`ChameleonTextTokenizer` does the same: ``encode`` of a prompt built by
:func:`lumos.sequence.format_prompt` (layout ``chameleon``) replaces the two numbers by placeholder added tokens
(ids beyond the model vocabulary, never emitted), encodes, and splices in the digit tokens. Any other text is
plain BPE. When Chameleon's pre-tokenizer isolates digits and spaces (num2tokens' "one token per digit" says it
splits digits), this equals BPE of the inline text; with a pre-tokenizer that glues ``" 24"`` into one piece it
does not, and ours keeps the training-time ids. Upstream's inference scripts wrote the two numbers inline.
"""

from __future__ import annotations

import json
import logging
import re
import string

from lumos import storage
from lumos.sequence import PROMPT_TEMPLATES, format_prompt
from lumos.vocab import VocabLayout, chameleon_layout

log = logging.getLogger(__name__)

DIGIT_ZERO = 16399
"""Token of the digit 0 in upstream ``data/num2tokens.json``; digit d ↦ DIGIT_ZERO + d."""
PLACEHOLDERS = {"frames": "<video_frames_placeholder>", "fps": "<video_fps_placeholder>"}
_LETTERS = "ABCDEFGHIJ"


def digit_tokens(n: int) -> list[int]:
    """One token per decimal digit of ``n`` (upstream num2tokens.json), e.g. 24 → [16401, 16403]."""
    if int(n) < 0:
        raise ValueError(f"number {n} must be >= 0")
    return [DIGIT_ZERO + int(d) for d in str(int(n))]


def visual_token_name(k: int) -> str:
    """Name of visual code k in the merged tokenizer: "VIDVID" + decimal digits as letters A..J + "Z"."""
    return "VIDVID" + "".join(_LETTERS[int(d)] for d in str(int(k))) + "Z"


def reserved_name(token_id: int) -> str:
    """Chameleon's name of a reserved token id: ``<reservedNNNNN>`` = NNNNN + 4."""
    return f"<reserved{token_id - 4:05d}>"


def special_token_names(layout: VocabLayout) -> dict[str, int]:
    """Expected name → id of the Chameleon tokens Lumos-1 uses (spec §3.3 table)."""
    names = {"<s>": layout.bos, "<eoss>": layout.eoi, "<racm3:break>": layout.boi}
    for token_id in (layout.sep, layout.newline, layout.num_zero, layout.mask, layout.video_begin,
                     layout.video_end):
        names[reserved_name(token_id)] = token_id
    return names


# ---------------------------------------------------------------------------------------------------------------
# the JSON file
# ---------------------------------------------------------------------------------------------------------------

def _flat_added_tokens(entries: list) -> list[dict]:
    out = []
    for e in entries:
        out.extend(_flat_added_tokens(e) if isinstance(e, list) else [e])
    return out


def sanitize_tokenizer_json(text: str) -> str:
    """Make upstream's merged tokenizer JSON loadable by HF ``tokenizers`` (ids unchanged).

    Args:
        text: the JSON text.

    Returns:
        JSON text with ``version`` "1.0" and a flat ``added_tokens`` list.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"text tokenizer is not JSON ({e})") from None
    if not isinstance(data, dict) or "model" not in data:
        raise ValueError("text tokenizer JSON has no 'model' section (not a HF tokenizers file)")
    data["version"] = "1.0"
    data["added_tokens"] = _flat_added_tokens(data.get("added_tokens") or [])
    return json.dumps(data, ensure_ascii=False)


def _first_bad_special(tok, layout: VocabLayout) -> str | None:
    for name, want in special_token_names(layout).items():
        got = tok.token_to_id(name)
        if got != want:
            return f"{name} has id {got}, Lumos-1 expects {want}"
    return None


def _first_bad_visual(tok, layout: VocabLayout) -> str | None:
    n = layout.codebook_size
    for k in sorted({0, 1, 9, 10, n // 2, n - 1}):
        name, want = visual_token_name(k), layout.visual_offset + k
        if tok.token_to_id(name) != want:
            return f"visual token {name} should have id {want}, found {tok.token_to_id(name)}"
    return None


def check_merged_tokenizer(tok, layout: VocabLayout | None = None) -> None:
    """Raise ValueError unless ``tok`` (a ``tokenizers.Tokenizer``) is the merged Lumos-1 tokenizer.

    Checks the special-token ids of spec §3.3 and visual tokens spread over the codebook (65,536 + k); warns when
    the digits 0–9 do not encode to upstream's num2tokens ids.
    """
    layout = layout or chameleon_layout()
    bad = _first_bad_special(tok, layout)
    if bad:
        raise ValueError(f"text tokenizer: {bad} (not Chameleon's tokenizer; LUMOS_SPEC §3.3)")
    bad = _first_bad_visual(tok, layout)
    if bad:
        raise ValueError(f"text tokenizer: {bad} — use the merged text_tokenizer.json with the 64,000 VIDVID "
                         "visual tokens (LUMOS_SPEC §3.2)")
    digits = [tok.encode(str(d), add_special_tokens=False).ids for d in range(10)]
    if digits != [[DIGIT_ZERO + d] for d in range(10)]:
        log.warning("text tokenizer encodes the digits 0-9 as %s, not upstream num2tokens %d..%d; prompt numbers "
                    "use the num2tokens ids", digits, DIGIT_ZERO, DIGIT_ZERO + 9)


# ---------------------------------------------------------------------------------------------------------------
# prompt encoding
# ---------------------------------------------------------------------------------------------------------------

def _template_regex(template: str) -> re.Pattern:
    """A regex matching ``template`` with (\\d+) numbers and any caption."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field:
            parts.append(r"(?P<caption>.*)" if field == "caption" else rf"(?P<{field}>\d+)")
    return re.compile("".join(parts), re.DOTALL)


class ChameleonTextTokenizer:
    """The merged Lumos-1 text tokenizer (TextTokenizer protocol: ``encode`` without BOS, ``decode``).

    Args:
        json_uri: URI (local or s3://) of ``text_tokenizer.json`` (upstream's file is sanitized on load).
        layout: the vocabulary layout to check ids against (default: ``chameleon``).
    """

    def __init__(self, json_uri: str, layout: VocabLayout | None = None):
        from tokenizers import AddedToken, Tokenizer

        self.layout = layout or chameleon_layout()
        try:
            raw = storage.read_text(json_uri)
        except FileNotFoundError:
            raise ValueError(f"text tokenizer JSON not found: {json_uri}") from None
        self.json = sanitize_tokenizer_json(raw)
        try:
            self.tok = Tokenizer.from_str(self.json)
        except Exception as e:  # tokenizers raises a bare Exception subclass
            raise ValueError(f"text tokenizer {json_uri}: {str(e).splitlines()[0]}") from None
        check_merged_tokenizer(self.tok, self.layout)
        self.identity = {"kind": "chameleon_json", "uri": str(json_uri),
                         "vocab_size": self.tok.get_vocab_size(with_added_tokens=True)}
        # upstream's placeholder added tokens (here with ids beyond the model vocabulary; never emitted)
        self.tok.add_special_tokens([AddedToken(p, normalized=False) for p in PLACEHOLDERS.values()])
        self._ph_ids = {self.tok.token_to_id(p): key for key, p in PLACEHOLDERS.items()}
        self._template = _template_regex(PROMPT_TEMPLATES["chameleon"])

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS); a spec §4 prompt gets its frame/fps numbers as upstream digit tokens."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        if any(p in text for p in PLACEHOLDERS.values()):
            raise ValueError(f"text must not contain the reserved strings {sorted(PLACEHOLDERS.values())}")
        m = self._template.fullmatch(text)
        if m is None:
            return list(self.tok.encode(text, add_special_tokens=False).ids)
        (fs, fe), (ps, pe) = m.span("frames"), m.span("fps")
        marked = text[:fs] + PLACEHOLDERS["frames"] + text[fe:ps] + PLACEHOLDERS["fps"] + text[pe:]
        numbers = {"frames": int(m.group("frames")), "fps": int(m.group("fps"))}
        out = []
        for t in self.tok.encode(marked, add_special_tokens=False).ids:
            out.extend(digit_tokens(numbers[self._ph_ids[t]]) if t in self._ph_ids else [t])
        return out

    def encode_prompt(self, caption: str, *, width: int, height: int, frames: int, fps: int) -> list[int]:
        """Ids of the spec §4 prompt for ``caption`` (no BOS, no separator); frames = fps × duration RGB frames."""
        return self.encode(format_prompt(self.layout, caption, width=width, height=height, frames=frames, fps=fps))

    def decode(self, ids) -> str:
        """Text of ``ids`` (special tokens kept)."""
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


def load_chameleon_tokenizer(uri: str, layout: VocabLayout | None = None) -> ChameleonTextTokenizer:
    """Open and validate the merged Lumos-1 ``text_tokenizer.json`` (local or s3://)."""
    return ChameleonTextTokenizer(uri, layout)


__all__ = ["DIGIT_ZERO", "PLACEHOLDERS", "ChameleonTextTokenizer", "check_merged_tokenizer", "digit_tokens",
           "load_chameleon_tokenizer", "reserved_name", "sanitize_tokenizer_json", "special_token_names",
           "visual_token_name"]
