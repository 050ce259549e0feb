"""Issue 17, defect 5: ``generate --out`` says when it creates folders and refuses, in one line, a path through a
file or a directory given as the output file (as the tokenization job does for its --out)."""

from __future__ import annotations

import logging

import pytest
from serve_helpers import debug_checkpoint

from workflows.generate import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return debug_checkpoint(tmp_path_factory.mktemp("generate_out"))


def test_missing_folders_are_created_and_said(checkpoint, tmp_path, caplog):
    out = tmp_path / "no" / "such" / "dir" / "a.png"
    with caplog.at_level(logging.INFO, logger="workflows.generate"):
        assert main(["--checkpoint", checkpoint, "--mode", "t2i", "--prompt", "a red circle", "--steps", "1",
                     "--cfg", "3", "--quiet", "--out", str(out)]) == 0
    assert out.is_file()
    assert f"--out {out}: creating the folder {out.parent}" in caplog.text


@pytest.mark.parametrize("case", ["under a file", "a directory"])
def test_unusable_out_is_one_line(checkpoint, tmp_path, capsys, case):
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = afile / "a.png" if case == "under a file" else tmp_path / "outdir.png"
    if case == "a directory":
        out.mkdir()
    assert main(["--checkpoint", checkpoint, "--mode", "t2i", "--prompt", "a", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = f"{afile} is a file, not a directory" if case == "under a file" else "is a directory; give a file"
    assert len(err) == 1 and expected in err[0], err
    assert afile.read_text() == "x"
