"""`lumos/` is pure PyTorch: importing it and every submodule pulls in neither ray nor deepspeed (STYLE B1.1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import importlib, pkgutil, sys
import lumos
names = [m.name for m in pkgutil.walk_packages(lumos.__path__, "lumos.")]
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "deepspeed"))
print(len(names), "modules;", "offenders:", bad)
sys.exit(1 if bad else 0)
"""


def test_lumos_imports_neither_ray_nor_deepspeed():
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    n = int(res.stdout.split()[0])
    assert n >= 8  # rope, masking, model.*, ardf, loss, checkpoint, ... were all imported


def test_import_lumos_is_light():
    res = subprocess.run([sys.executable, "-c", "import sys, lumos; print('torch' in sys.modules)"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "False"
