"""Convert released Lumos-1 weights (HF layout) + the Cosmos tokenizer + the merged text tokenizer into our
checkpoint directory (DESIGN §4.5), so that generate / serve / fine-tuning use them unchanged.

    python -m workflows.convert_hf \\
        --hf Lumos-1/3B/stage-2-joint-384p \\
        --cosmos ckpts/Cosmos-Tokenizer-DV4x8x8 \\
        --text-tokenizer Lumos-1/tokenizer/text_tokenizer.json \\
        --out s3://bucket/lumos/3b-384p

Every path may be local or ``s3://`` (standard AWS environment). See docs/model.md, "Released weights".
"""

from __future__ import annotations

import argparse
import logging
import sys

from lumos.config import ROPE_VARIANTS
from lumos.convert.package import DTYPES, convert_hf_checkpoint

log = logging.getLogger("workflows.convert_hf")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workflows.convert_hf", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf", required=True, help="HF checkpoint directory (config.json + safetensors shards + index "
                   "json) or a single weights file; local or s3://")
    p.add_argument("--out", required=True, help="output checkpoint directory (local or s3://); must not hold one")
    p.add_argument("--cosmos", default=None, help="Cosmos-Tokenizer-DV4x8x8 directory (encoder.jit, decoder.jit)")
    p.add_argument("--text-tokenizer", default=None, help="merged Lumos-1 text_tokenizer.json (Chameleon BPE + "
                   "64,000 VIDVID visual tokens)")
    p.add_argument("--copy-cosmos", action="store_true", help="copy the Cosmos files into OUT/tokenizer "
                   "(self-contained checkpoint) instead of referring to --cosmos")
    p.add_argument("--no-check-cosmos", action="store_true", help="only check that the Cosmos .jit files exist "
                   "(do not load them)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weights dtype to write (default: as "
                   "stored, bf16 for the released checkpoints)")
    p.add_argument("--vocab", choices=["chameleon", "compact"], default=None, help="vocabulary layout (default: "
                   "chameleon, which needs vocab_size 129536)")
    p.add_argument("--rope-variant", choices=ROPE_VARIANTS, default=None, help="override the RoPE variant "
                   "(default: mm unless config.json says mm_rope: false)")
    p.add_argument("--resolution", default=None, help="default WxH for generate/serve, multiples of 32 (default: "
                   "672x384 for a *384p* checkpoint, else 448x256)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def parse_resolution(text: str | None) -> tuple[int, int] | None:
    """``"672x384"`` → (672, 384)."""
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--resolution {text!r} must look like 672x384") from None
    return w, h


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        out = convert_hf_checkpoint(
            args.hf, args.out, video_tokenizer=args.cosmos, text_tokenizer=args.text_tokenizer, vocab=args.vocab,
            rope_variant=args.rope_variant, dtype=args.dtype, resolution=parse_resolution(args.resolution),
            copy_video_tokenizer=args.copy_cosmos,
            check_video_tokenizer=not args.no_check_cosmos, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"converted checkpoint: {out}")
    print(f"generate: python -m workflows.generate --checkpoint {out} --prompt '...' --out video.mp4")
    return 0


if __name__ == "__main__":
    sys.exit(main())
