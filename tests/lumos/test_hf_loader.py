"""Released-weights loading (lumos.convert, workflows.convert_hf): HF Chameleon parity, upstream-style Lumos-1
checkpoints, the merged text tokenizer and the spec §4 prompt ids."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save as save_safetensors
from test_cosmos_adapter import (  # scripted modules with the released .jit signatures
    TinyDVDecoder,
    TinyDVEncoder,
)

from lumos import storage
from lumos.checkpoint import load_checkpoint
from lumos.convert.chameleon_text import (
    DIGIT_ZERO,
    ChameleonTextTokenizer,
    digit_tokens,
    reserved_name,
    sanitize_tokenizer_json,
    visual_token_name,
)
from lumos.convert.hf_model import load_hf_model, load_hf_state, model_config_from_hf
from lumos.convert.package import convert_hf_checkpoint
from lumos.sampler import encode_prompt, plan_video
from lumos.sequence import build_sequence, format_prompt
from workflows import convert_hf
from workflows.generation import load_generator

CAPTION = "A red ball rolls over 3 green boxes."


# ---------------------------------------------------------------------------------------------------------------
# helpers: upstream-style checkpoints and a small merged tokenizer
# ---------------------------------------------------------------------------------------------------------------

def upstream_config(vocab_size: int, dim: int = 64, heads: int = 2, kv_heads: int = 2, layers: int = 2,
                    ffn: int = 128) -> dict:
    """A config.json shaped like Lumos-1's (ChameleonXLLMXConfig, transformers 4.x field names)."""
    return {"architectures": ["ChameleonXLLMXForConditionalGeneration"], "model_type": "chameleon",
            "vocab_size": vocab_size, "hidden_size": dim, "intermediate_size": ffn, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "rope_scaling": None, "model_parallel_size": 1, "swin_norm": False,
            "attention_bias": False, "mlp_bias": False, "hidden_act": "silu", "tie_word_embeddings": False,
            "max_position_embeddings": 65536, "mm_rope": True, "mask_image_logits": False}


def upstream_state(cfg: dict, dtype=torch.bfloat16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under upstream names, QK-norm [model_parallel_size, head_dim], plus vqmodel tensors."""
    g = torch.Generator().manual_seed(seed)
    D, V, F = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, mp = D // nh, cfg["model_parallel_size"]

    def w(*shape, base=0.0, std=0.02):
        return (base + std * torch.randn(*shape, generator=g)).to(dtype)

    s = {"model.embed_tokens.weight": w(V, D), "model.norm.weight": w(D, base=1.0, std=0.1),
         "lm_head.weight": w(V, D), "model.vqmodel.encoder.conv_in.weight": w(8, 3, 3, 3),
         "model.vqmodel.quantize.embedding.weight": w(16, 8)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s.update({p + "self_attn.q_proj.weight": w(nh * hd, D), p + "self_attn.k_proj.weight": w(nkv * hd, D),
                  p + "self_attn.v_proj.weight": w(nkv * hd, D), p + "self_attn.o_proj.weight": w(D, nh * hd),
                  p + "self_attn.q_norm.weight": w(mp, hd, base=1.0, std=0.2),
                  p + "self_attn.q_norm.bias": w(mp, hd, std=0.2),
                  p + "self_attn.k_norm.weight": w(mp, hd, base=1.0, std=0.2),
                  p + "self_attn.k_norm.bias": w(mp, hd, std=0.2),
                  p + "mlp.gate_proj.weight": w(F, D), p + "mlp.up_proj.weight": w(F, D),
                  p + "mlp.down_proj.weight": w(D, F), p + "input_layernorm.weight": w(D, base=1.0, std=0.1),
                  p + "post_attention_layernorm.weight": w(D, base=1.0, std=0.1)})
    return s


def write_hf_checkpoint(uri: str, cfg: dict, state: dict[str, torch.Tensor], shards: int = 2) -> str:
    """config.json + ``model-0000i-of-0000n.safetensors`` shards + index json (save_pretrained's layout)."""
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        storage.write_bytes(storage.join(uri, fname), save_safetensors({k: state[k].contiguous() for k in part}))
        weight_map.update({k: fname for k in part})
    storage.write_text(storage.join(uri, "model.safetensors.index.json"),
                       json.dumps({"metadata": {}, "weight_map": weight_map}))
    storage.write_text(storage.join(uri, "config.json"), json.dumps(cfg))
    return uri


def merged_tokenizer_json(isolate_digits: bool = True) -> str:
    """A small Chameleon-like byte-level BPE merged the way upstream's create_cosmos_codebook.py does it:
    specials and reserved tokens at Chameleon's ids, digits at num2tokens' ids, 64,000 VIDVID tokens at
    65,536 + k appended to added_tokens as one nested list, and "version": "2.0"."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    text = format_prompt(_layout(), CAPTION, width=448, height=256, frames=24, fps=12)
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\p{N}"), "isolated"), byte_level]) \
        if isolate_digits else byte_level
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text, "two dogs run in the park"] * 3, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    data = json.loads(tok.to_str())
    specials = {"<s>": 0, "</s>": 1, "<pad>": 2, "<unk>": 3, "<eoss>": 8196, "<racm3:break>": 8197}
    specials.update({reserved_name(i): i for i in range(8198, 9300)})
    vocab = {**specials, **{str(d): DIGIT_ZERO + d for d in range(10)}}
    for t in sorted(data["model"]["vocab"], key=data["model"]["vocab"].get):
        vocab.setdefault(t, 20000 + len(vocab))
    visual = {visual_token_name(k): 65536 + k for k in range(64000)}
    data["model"]["vocab"] = {**vocab, **visual}

    def entry(content, i):
        return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True}

    data["added_tokens"] = [entry(c, i) for c, i in specials.items()] + [[entry(c, i) for c, i in visual.items()]]
    pre = data["pre_tokenizer"] if data["pre_tokenizer"]["type"] == "Sequence" else \
        {"type": "Sequence", "pretokenizers": [data["pre_tokenizer"]]}
    pre["pretokenizers"].append({"type": "Split", "pattern": {"Regex": "(VIDVID)((A|B|C|D|E|F|G|H|I|J){1,5})Z"},
                                 "behavior": "Isolated", "invert": False})
    data["pre_tokenizer"], data["version"] = pre, "2.0"
    return json.dumps(data)


def _layout():
    from lumos.vocab import chameleon_layout

    return chameleon_layout()


def text_only_inputs(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    B, L = ids.shape
    return {"ids": ids, "frame_ids": torch.full_like(ids, -1), "coords": torch.zeros(B, L, 3, dtype=torch.long),
            "visual": torch.zeros(B, L, dtype=torch.bool), "pos1d": torch.arange(L).expand(B, L), "p0": 0}


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> str:
    """Path of a merged tokenizer JSON in upstream's (unsanitized) format."""
    path = tmp_path_factory.mktemp("tok") / "text_tokenizer.json"
    path.write_text(merged_tokenizer_json())
    return str(path)


@pytest.fixture(scope="module")
def glued_tokenizer_json(tmp_path_factory) -> str:
    """Like ``tokenizer_json`` but its pre-tokenizer keeps " 24" in one piece (BPE merges digits), so the inline
    prompt text does NOT give upstream's digit ids: only the placeholder splice does."""
    path = tmp_path_factory.mktemp("tok") / "text_tokenizer.json"
    path.write_text(merged_tokenizer_json(isolate_digits=False))
    return str(path)


@pytest.fixture(scope="module")
def chameleon_tok(tokenizer_json) -> ChameleonTextTokenizer:
    return ChameleonTextTokenizer(tokenizer_json)


@pytest.fixture(scope="module")
def cosmos_dir(tmp_path_factory) -> str:
    """A directory with encoder.jit / decoder.jit of the Cosmos DV4x8x8 call signatures (64,000 codes)."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("Cosmos-Tokenizer-DV4x8x8")
    torch.jit.script(TinyDVEncoder()).save(str(d / "encoder.jit"))
    torch.jit.script(TinyDVDecoder()).save(str(d / "decoder.jit"))
    return str(d)


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory):
    """A tiny random transformers ChameleonForConditionalGeneration (GQA, head_dim 64, per-head QK-norms with
    random distinct values), saved with save_pretrained."""
    transformers = pytest.importorskip("transformers")
    vq = dict(embed_dim=8, num_embeddings=16, latent_channels=8, base_channels=32, channel_multiplier=[1],
              num_res_blocks=1, resolution=32, attn_resolutions=[])
    cfg = transformers.ChameleonConfig(vocab_size=752, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=1, vq_config=vq,
                                       max_position_embeddings=512, vocabulary_map={"<image>": 751})
    torch.manual_seed(0)
    model = transformers.ChameleonForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and "vqmodel" not in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn(p.shape, generator=g))
    path = tmp_path_factory.mktemp("hf") / "tiny-chameleon"
    model.save_pretrained(path)
    return model, str(path)


# ---------------------------------------------------------------------------------------------------------------
# HF transformers parity
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.slow  # importing transformers takes 10-30 s on the shared CPU
@pytest.mark.parametrize("rope_variant", ["mm", "1d"])
def test_hf_chameleon_logits_match_on_text(hf_tiny, rope_variant):
    hf_model, path = hf_tiny
    model, cfg = load_hf_model(path, vocab="compact", rope_variant=rope_variant, progress=False)
    assert cfg.qk_norm_per_head and (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (2, 1, 64)
    ids = torch.randint(0, 752, (2, 37), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf_model(input_ids=ids).logits
        out = model(**text_only_inputs(ids))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # negative control: sharing head 0's QK-norm across heads changes the logits
        model.layers[0].attention.q_norm.weight[1] = model.layers[0].attention.q_norm.weight[0]
        assert (model(**text_only_inputs(ids)) - ref).abs().max() > 1e-3


@pytest.mark.slow
def test_convert_cli_output_loads_with_load_checkpoint(hf_tiny, tmp_path):
    hf_model, path = hf_tiny
    out = tmp_path / "ckpt"
    assert convert_hf.main(["--hf", path, "--out", str(out), "--vocab", "compact", "--quiet"]) == 0
    model, cfg, meta = load_checkpoint(str(out))
    assert meta["source"]["qk_norm"] == "per_head" and meta["video_tokenizer"] is None
    ids = torch.randint(0, 752, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(**text_only_inputs(ids)), hf_model(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)
    assert convert_hf.main(["--hf", path, "--out", str(out), "--vocab", "compact", "--quiet"]) == 2  # exists


# ---------------------------------------------------------------------------------------------------------------
# upstream-style Lumos-1 checkpoints
# ---------------------------------------------------------------------------------------------------------------

def test_upstream_shared_qk_norm_loads_as_shared(tmp_path):
    cfg = upstream_config(vocab_size=512 + 64, heads=2, kv_heads=1)
    state = upstream_state(cfg, dtype=torch.float32)
    write_hf_checkpoint(str(tmp_path), cfg, state)
    ours, mcfg, _ = load_hf_state(str(tmp_path), vocab="compact", progress=False)
    assert not mcfg.qk_norm_per_head and mcfg.rope_variant == "mm" and mcfg.codebook_size == 64
    assert torch.equal(ours["layers.1.attention.k_norm.bias"], state["model.layers.1.self_attn.k_norm.bias"][0])
    assert torch.equal(ours["layers.0.feed_forward.w3.weight"], state["model.layers.0.mlp.up_proj.weight"])
    assert not any("vqmodel" in k for k in ours)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("model.layers.1.mlp.up_proj.weight"), "lacks tensor 'model.layers.1.mlp.up_proj.weight'"),
    (lambda s: s.update({"model.layers.0.self_attn.q_proj.weight": torch.zeros(3, 64)}),
     "'model.layers.0.self_attn.q_proj.weight' has shape (3, 64)"),
    (lambda s: s.update({"model.layers.0.self_attn.extra.weight": torch.zeros(2)}),
     "unexpected tensor 'model.layers.0.self_attn.extra.weight'"),
    (lambda s: s.update({"model.layers.2.mlp.up_proj.weight": torch.zeros(128, 64)}),
     "'model.layers.2.mlp.up_proj.weight' beyond the 2 layers"),
])
def test_mismatched_checkpoint_names_the_first_bad_tensor(tmp_path, edit, message):
    cfg = upstream_config(vocab_size=600)
    state = upstream_state(cfg, dtype=torch.float32)
    edit(state)
    write_hf_checkpoint(str(tmp_path), cfg, state, shards=1)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_hf_state(str(tmp_path), vocab="compact", progress=False)


def test_convert_rejects_a_directory_without_cosmos_files(tmp_path):
    cfg = upstream_config(vocab_size=600)
    write_hf_checkpoint(str(tmp_path / "hf"), cfg, upstream_state(cfg), shards=1)
    with pytest.raises(ValueError, match="no encoder.jit"):
        convert_hf_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), vocab="compact",
                              video_tokenizer=str(tmp_path), progress=False)
    assert not (tmp_path / "out" / "config.json").exists()


def test_config_errors_are_one_line():
    with pytest.raises(ValueError, match="vocab_size=600 is not the Lumos-1 vocabulary"):
        model_config_from_hf(upstream_config(vocab_size=600))
    with pytest.raises(ValueError, match="swin_norm=True is not supported"):
        model_config_from_hf({**upstream_config(vocab_size=129536), "swin_norm": True})
    cfg = model_config_from_hf({**upstream_config(vocab_size=129536), "rope_theta": 5e5, "mm_rope": False})
    assert (cfg.vocab, cfg.codebook_size, cfg.rope_theta, cfg.rope_variant) == ("chameleon", 64000, 5e5, "1d")
    hf5 = {k: v for k, v in upstream_config(vocab_size=129536).items() if k != "rope_theta"}
    cfg = model_config_from_hf({**hf5, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})
    assert cfg.rope_theta == 1e6 and cfg.rope_variant == "mm"


def test_convert_upstream_checkpoint_from_s3_and_build_the_spec_prompt(s3_bucket, glued_tokenizer_json,
                                                                      cosmos_dir, tmp_path):
    """A 129,536-vocabulary upstream-style checkpoint on S3 + Cosmos + merged tokenizer → our checkpoint, opened by
    workflows.generate unchanged → its text tokenizer encodes the spec §4 prompt as upstream (num2tokens digits
    between BPE pieces, even with a BPE that merges digits), the chameleon-layout sequence of a text-to-video
    prompt has exactly the ids of LUMOS_SPEC §4, the model runs on it and the Cosmos decoder turns its codes into
    frames."""
    cfg = upstream_config(vocab_size=129536, dim=64, heads=2, kv_heads=1)
    hf_uri = write_hf_checkpoint(storage.join(s3_bucket, "Lumos-1/1B/stage-2-joint"), cfg, upstream_state(cfg))
    out = str(tmp_path / "converted")
    assert convert_hf.main(["--hf", hf_uri, "--text-tokenizer", glued_tokenizer_json, "--cosmos", cosmos_dir,
                            "--copy-cosmos", "--out", out, "--quiet"]) == 0
    gen = load_generator(out, "cpu")
    model, mcfg, meta = gen.model, gen.model_cfg, gen.meta
    assert (mcfg.vocab, mcfg.rope_variant, mcfg.qk_norm_per_head, mcfg.head_dim) == ("chameleon", "mm", False, 32)
    assert meta["video_tokenizer"] == "tokenizer" and meta["video_tokenizer_source"] == cosmos_dir
    assert gen.video_tokenizer.codebook_size == 64000
    assert meta["resolution"] == [448, 256]  # a 256p stage; generate/serve default to it
    layout, tok = mcfg.layout, gen.text_tokenizer
    assert isinstance(tok, ChameleonTextTokenizer)  # load_text_tokenizer picks it for the chameleon layout
    # the sanitized tokenizer, loadable as is
    assert storage.read_text(meta["text_tokenizer"]) == sanitize_tokenizer_json(open(glued_tokenizer_json).read())

    W, H, duration, fps = 64, 32, 2, 12  # latent grid 4 × 8, grid tokens H/32 = 1, W/32 = 2
    prompt = format_prompt(layout, CAPTION, width=W, height=H, frames=duration * fps, fps=fps)

    def bpe(s):  # plain BPE of the merged tokenizer
        return tok.tok.encode(s, add_special_tokens=False).ids

    text_ids = (bpe("Generate a video with a resolution of 64x32, consisting of ") + [16401, 16403]
                + bpe(" frames at ") + [16400, 16401]
                + bpe(" frames per second, according to the following prompt:\n " + CAPTION))
    assert text_ids != bpe(prompt)  # this BPE merges " 24": only upstream's placeholder splice gives these ids
    plan = plan_video("t2v", (H // 8, W // 8), fps=fps, duration=duration)
    assert encode_prompt(tok, layout, CAPTION, plan, gen.spatial) == text_ids  # what generate/serve/eval feed
    from tokenize_jobs.udfs import TokenizeClips  # and what the tokenize job writes into training shards

    clips = TokenizeClips(cosmos_dir, layout="chameleon", text_tokenizer=meta["text_tokenizer"])
    row = {"caption": CAPTION, "width": W, "height": H, "num_frames": duration * fps + 1, "fps": float(fps)}
    assert clips.tokens_row(row, torch.zeros(2, H // 8, W // 8, dtype=torch.int64).numpy())["text_ids"] == text_ids
    codes = torch.randint(0, 64000, (2, H // 8, W // 8), generator=torch.Generator().manual_seed(4))
    ids = build_sequence(layout, text_ids, codes, duration=duration, fps=fps).ids.tolist()

    n = len(text_ids)
    assert ids[0] == 0 and ids[1:n + 1] == text_ids
    assert ids[n + 1:n + 5] == [8710, 9004, 8804 + duration, 8804 + fps]
    pos = n + 5
    for f in range(2):
        assert ids[pos:pos + 3] == [8197, 8804 + H // 32, 8804 + W // 32]
        pos += 3
        for r in range(H // 8):
            assert ids[pos:pos + W // 8 + 1] == [65536 + int(c) for c in codes[f, r]] + [8803]
            pos += W // 8 + 1
        assert ids[pos] == 8196
        pos += 1
    assert ids[pos:] == [9005, 8710]

    with torch.no_grad():
        logits = model(**{k: v for k, v in _inputs(layout, text_ids, codes, duration, fps).items()})
    assert logits.shape == (1, len(ids), 129536) and torch.isfinite(logits).all()
    assert gen.video_tokenizer.decode(codes).shape == (1 + 4 * (2 - 1), H, W, 3)


def _inputs(layout, text_ids, codes, duration, fps):
    from lumos.sequence import collate_sequences

    batch = collate_sequences([build_sequence(layout, text_ids, codes, duration=duration, fps=fps)])
    return {k: batch[k] for k in ("ids", "frame_ids", "coords", "visual", "pos1d", "p0")}


# ---------------------------------------------------------------------------------------------------------------
# the merged text tokenizer and the prompt numbers
# ---------------------------------------------------------------------------------------------------------------

def test_prompt_numbers_are_num2tokens_digits_between_bpe_pieces(chameleon_tok):
    tok = chameleon_tok

    def bpe(s):  # plain BPE of the merged tokenizer
        return tok.tok.encode(s, add_special_tokens=False).ids

    ids = tok.encode_prompt(CAPTION, width=448, height=256, frames=24, fps=12)
    # upstream: the placeholders split the text; each number becomes one token per digit (num2tokens.json)
    expected = (bpe("Generate a video with a resolution of 448x256, consisting of ") + [16401, 16403]
                + bpe(" frames at ") + [16400, 16401]
                + bpe(" frames per second, according to the following prompt:\n " + CAPTION))
    assert ids == expected
    assert digit_tokens(24) == [16401, 16403] and digit_tokens(7) == [16406]
    assert tok.decode(ids) == format_prompt(tok.layout, CAPTION, width=448, height=256, frames=24, fps=12)
    # this tokenizer isolates digits, so the inline text gives the same ids (documented interaction with BPE)
    assert ids == bpe(format_prompt(tok.layout, CAPTION, width=448, height=256, frames=24, fps=12))
    assert tok.encode("two dogs run") == bpe("two dogs run")  # any other text: plain BPE
    assert tok.encode(visual_token_name(12)) == [65536 + 12]


def test_sanitize_keeps_ids_and_tokenizer_without_visual_tokens_fails(tokenizer_json, chameleon_tok, tmp_path):
    data = json.loads(open(tokenizer_json).read())
    clean = json.loads(chameleon_tok.json)
    assert clean["version"] == "1.0" and all(isinstance(e, dict) for e in clean["added_tokens"])
    assert clean["added_tokens"] == data["added_tokens"][:-1] + data["added_tokens"][-1]
    assert clean["model"] == data["model"]
    assert json.loads(sanitize_tokenizer_json(chameleon_tok.json)) == clean  # idempotent
    data["added_tokens"] = data["added_tokens"][:-1]  # Chameleon alone: no VIDVID tokens (upstream issue #1)
    data["model"]["vocab"] = {k: v for k, v in data["model"]["vocab"].items() if not k.startswith("VIDVID")}
    path = tmp_path / "chameleon_only.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="VIDVIDAZ should have id 65536"):
        ChameleonTextTokenizer(str(path))
    with pytest.raises(ValueError, match="not found"):
        ChameleonTextTokenizer(str(tmp_path / "missing.json"))


def test_cli_help_and_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        convert_hf.main(["--help"])
    assert e.value.code == 0 and "--text-tokenizer" in capsys.readouterr().out
    assert convert_hf.main(["--hf", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --hf") and "config.json" in err[0]
    assert convert_hf.main(["--hf", str(tmp_path), "--out", str(tmp_path / "o"), "--resolution", "big"]) == 2
    assert capsys.readouterr().err.strip() == "error: --resolution 'big' must look like 672x384"
