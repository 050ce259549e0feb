"""Cosmos DV4x8x8 adapter against TorchScript modules with the released encoder.jit / decoder.jit signatures."""

import pytest
import torch
from torch import nn

from lumos import storage
from lumos.tokenizers import load_video_tokenizer, save_video_tokenizer
from lumos.tokenizers.cosmos import CosmosTokenizer

LEVELS = [8, 8, 8, 5, 5, 5]


class TinyDVEncoder(nn.Module):
    """x [B,3,T,H,W] in [−1,1], T = 1+4k → (indices [B,1+k,H/8,W/8], codes [B,6,1+k,H/8,W/8], extra)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv3d(3, 6, 1)
        self.register_buffer("levels", torch.tensor(LEVELS))
        self.register_buffer("basis", torch.tensor([1, 8, 64, 512, 2560, 12800]))

    def forward(self, x: torch.Tensor):
        first = x[:, :, :1]
        rest = x[:, :, 1:]
        b, c, t, h, w = rest.shape
        groups = rest.reshape(b, c, t // 4, 4, h, w).mean(3)
        x = torch.cat([first, groups], dim=2)  # (B, 3, 1+k, H, W): causal groups
        x = nn.functional.avg_pool3d(x, (1, 8, 8))
        z = torch.tanh(self.proj(x.float()))  # (B, 6, F, h, w)
        half = (self.levels // 2).view(1, 6, 1, 1, 1)
        digits = torch.round((z + 1) / 2 * (self.levels.view(1, 6, 1, 1, 1) - 1)).long()
        indices = (digits * self.basis.view(1, 6, 1, 1, 1)).sum(1)
        codes = (digits - half).float() / half
        return indices, codes, z


class TinyDVDecoder(nn.Module):
    """indices [B,F,h,w] → [B,3,1+4(F−1),8h,8w] in [−1,1]."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv3d(6, 3, 1)
        self.register_buffer("levels", torch.tensor(LEVELS))
        self.register_buffer("basis", torch.tensor([1, 8, 64, 512, 2560, 12800]))

    def forward(self, indices: torch.Tensor):
        digits = (indices.unsqueeze(1) // self.basis.view(1, 6, 1, 1, 1)) % self.levels.view(1, 6, 1, 1, 1)
        y = torch.tanh(self.proj(digits.float() / 4 - 1))  # (B, 3, F, h, w)
        y = y.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
        return torch.cat([y[:, :, :1], y[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)


@pytest.fixture(scope="module")
def cosmos_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("cosmos")
    torch.jit.script(TinyDVEncoder()).save(str(d / "encoder.jit"))
    torch.jit.script(TinyDVDecoder()).save(str(d / "decoder.jit"))
    return d


def _video(n, h=32, w=48):
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))


@pytest.mark.parametrize("n", [1, 5, 7, 9])
def test_encode_decode_shapes(cosmos_dir, n):
    tok = load_video_tokenizer(str(cosmos_dir))
    assert isinstance(tok, CosmosTokenizer) and tok.codebook_size == 64000
    codes = tok.encode(_video(n))
    f = 1 + -(-(n - 1) // 4)
    assert codes.shape == (f, 4, 6) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < 64000
    out = tok.decode(codes)
    assert out.shape == (1 + 4 * (f - 1), 32, 48, 3) and out.dtype == torch.uint8


def test_adapter_matches_direct_jit_calls(cosmos_dir):
    tok = load_video_tokenizer(str(cosmos_dir))
    video = _video(5)
    x = video.permute(3, 0, 1, 2).unsqueeze(0).float() / 127.5 - 1  # (1, 3, 5, H, W) in [-1, 1]
    enc = torch.jit.load(str(cosmos_dir / "encoder.jit"))
    indices, _, _ = enc(x)
    assert torch.equal(tok.encode(video), indices[0])
    dec = torch.jit.load(str(cosmos_dir / "decoder.jit"))
    want = ((dec(indices).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 3, 0)
    assert torch.equal(tok.decode(indices[0]), want)


def test_batched_identity_and_s3_round_trip(cosmos_dir, s3_bucket):
    tok = load_video_tokenizer(str(cosmos_dir))
    batch = torch.stack([_video(5), _video(5).flip(0)])
    codes = tok.encode(batch)
    assert codes.shape == (2, 2, 4, 6)
    assert torch.equal(codes[1], tok.encode(batch[1]))
    ident = tok.identity
    assert ident["kind"] == "cosmos_jit" and ident["levels"] == LEVELS and len(ident["sha256"]) == 64
    uri = f"{s3_bucket}/Cosmos-Tokenizer-DV4x8x8"
    save_video_tokenizer(uri, tok)
    assert sorted(u.rsplit("/", 1)[1] for u in storage.list_files(uri)) == ["decoder.jit", "encoder.jit"]
    remote = load_video_tokenizer(uri)
    assert remote.identity == ident and torch.equal(remote.encode(batch), codes)


def test_errors(cosmos_dir, tmp_path):
    tok = load_video_tokenizer(str(cosmos_dir))
    with pytest.raises(ValueError, match="multiples of 8"):
        tok.encode(_video(5, 30, 32))
    with pytest.raises(ValueError, match="codes must lie in"):
        tok.decode(torch.full((1, 4, 6), 64000))
    (tmp_path / "encoder.jit").write_bytes(b"not torchscript")
    (tmp_path / "decoder.jit").write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="encoder.jit is not a TorchScript module"):
        load_video_tokenizer(str(tmp_path))
