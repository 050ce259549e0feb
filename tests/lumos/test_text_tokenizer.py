"""Text tokenizers: byte-level round trip (incl. unicode), HF JSON built here and loaded from local and S3."""

import pytest

from lumos import storage
from lumos.tokenizers.text import ByteTokenizer, HFTextTokenizer, load_text_tokenizer
from lumos.vocab import chameleon_layout, compact_layout


def test_byte_tokenizer_round_trip_unicode():
    layout = compact_layout(240)
    tok = ByteTokenizer(layout)
    text = "a red circle moving right — café, 日本語, emoji 🎬"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert all(layout.byte_offset <= i < layout.byte_offset + 256 for i in ids)
    assert all(i < layout.text_vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert ids[0] == layout.byte_offset + ord("a")  # no BOS


def test_byte_tokenizer_skips_special_ids_when_decoding():
    layout = compact_layout(240)
    tok = ByteTokenizer(layout)
    ids = [layout.bos] + tok.encode("hi") + [layout.sep, layout.visual_offset + 3]
    assert tok.decode(ids) == "hi"


def test_load_text_tokenizer_defaults_and_errors():
    assert isinstance(load_text_tokenizer(None, compact_layout(1000)), ByteTokenizer)
    with pytest.raises(ValueError, match="text tokenizer JSON"):
        load_text_tokenizer(None, chameleon_layout())
    with pytest.raises(ValueError, match="no byte range"):
        ByteTokenizer(chameleon_layout())
    with pytest.raises(ValueError, match="text must be a str"):
        ByteTokenizer(compact_layout(240)).encode(b"bytes")


def _tiny_bpe_json() -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<s>", "<unk>"])
    corpus = ["a red circle moving right in the top left", "a blue square staying still in the center",
              "a small green triangle moving up in the bottom right"] * 20
    tok.train_from_iterator(corpus, trainer)
    return tok.to_str()


def _check_hf(tok):
    ids = tok.encode("a red square moving up")
    assert ids and all(isinstance(i, int) for i in ids)
    assert 0 not in ids  # no BOS added
    assert tok.decode(ids).replace(" ", "") == "aredsquaremovingup"


def test_hf_tokenizer_from_local_file(tmp_path):
    path = tmp_path / "text_tokenizer.json"
    path.write_text(_tiny_bpe_json())
    tok = load_text_tokenizer(str(path), compact_layout(240))
    assert isinstance(tok, HFTextTokenizer)
    _check_hf(tok)
    # the chameleon layout takes only the merged Lumos-1 tokenizer (ChameleonTextTokenizer, tests/lumos/test_hf_loader)
    with pytest.raises(ValueError, match="<eoss> has id None, Lumos-1 expects 8196"):
        load_text_tokenizer(str(path), chameleon_layout())


def test_hf_tokenizer_from_s3(s3_bucket):
    uri = storage.join(s3_bucket, "tok", "text_tokenizer.json")
    storage.write_text(uri, _tiny_bpe_json())
    _check_hf(load_text_tokenizer(uri, compact_layout(240)))


def test_hf_tokenizer_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        HFTextTokenizer(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a HF tokenizers JSON"):
        HFTextTokenizer(str(bad))
    from tokenizers import Tokenizer

    big_tok = Tokenizer.from_str(_tiny_bpe_json())
    big_tok.add_tokens([f"extra{i}" for i in range(600)])
    big = tmp_path / "big.json"
    big.write_text(big_tok.to_str())
    with pytest.raises(ValueError, match="more than layout"):
        HFTextTokenizer(str(big), compact_layout(2))


def test_word_tokenizer_lives_in_the_free_ids_and_round_trips(tmp_path):
    from lumos.tokenizers.text import free_text_ids, load_text_tokenizer, train_word_tokenizer
    from lumos.vocab import build_layout

    layout = build_layout("compact", 1000)
    free = free_text_ids(layout)
    assert (free.start, free.stop) == (8, 128)  # after the specials, before the number tokens
    texts = ["a small red circle in the center", "a large blue square moving left in the top left, and a red circle"]
    path = tmp_path / "words.json"
    path.write_text(train_word_tokenizer(texts, layout))
    tok = load_text_tokenizer(str(path), layout)
    ids = tok.encode("a large red square in the center")
    assert all(i in free for i in ids) and len(ids) == 7  # one id per word
    assert tok.decode(ids) == "a large red square in the center"
    assert tok.encode("a purple circle")[1] == tok.encode("zebra")[0] == free.start  # unknown words -> [UNK]
    with pytest.raises(ValueError, match="do not fit"):
        train_word_tokenizer([" ".join(f"w{i}" for i in range(200))], layout)


def test_committed_word_tokenizer_spells_every_world_word():
    from lumos.shapes.world import COLORS, REGIONS, SHAPES, SIZES
    from lumos.tokenizers.text import load_text_tokenizer
    from lumos.tokenizers.video import ASSETS
    from lumos.vocab import build_layout

    tok = load_text_tokenizer(str(ASSETS / "text_words.json"), build_layout("compact", 1000))
    words = {*COLORS, *SHAPES, *SIZES, *" ".join(REGIONS).split(), "moving", "staying", "still", "up", "down",
             "left", "right", "a", "in", "the", "and", ","}
    unk = tok.encode("zzz")[0]
    assert all(tok.encode(w) != [unk] for w in words)
