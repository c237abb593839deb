"""Build a pure-Python ``torchaudio`` wheel for CPU-only torch.

Why: the ``descript`` codec backend needs the ``dac`` package, which imports ``audiotools``,
which imports ``torchaudio`` at module level. The only ``torchaudio`` wheels on PyPI for our
torch are CUDA builds whose compiled extension fails to load next to a CPU torch
(``libc10_cuda.so`` missing), so ``import dac`` fails.

torchaudio itself supports running without its compiled extension (``_extension._load_lib``
returns ``False`` when the library file is absent, the layout used for pex deployments); only
the ops that need C++ (sox effects, CTC decoders, RNNT loss) are then unavailable. Neither DAC's
model code nor discodiff calls any of them.

This script downloads the official wheel, drops ``torchaudio/lib/*.so`` and their RECORD lines,
and writes the result to a wheelhouse. Installing from there is an ordinary, uninstallable pip
install; nothing in site-packages is patched by hand.

Usage: python tools/pure_torchaudio.py WHEELHOUSE [--version 2.11.0]
       pip install --no-deps --find-links WHEELHOUSE torchaudio==2.11.0
"""

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def strip_extensions(wheel: Path, out_dir: Path) -> Path:
    """Copy ``wheel`` into ``out_dir`` without compiled extension modules."""
    out = out_dir / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename.startswith("torchaudio/lib/") and item.filename.endswith(".so"):
                continue
            data = src.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(l for l in lines if not (l.startswith("torchaudio/lib/") and ".so," in l)).encode()
            dst.writestr(item, data)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheelhouse", type=Path)
    parser.add_argument("--version", default="2.11.0")
    args = parser.parse_args()
    args.wheelhouse.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", tmp, f"torchaudio=={args.version}"], check=True)
        (wheel,) = Path(tmp).glob("torchaudio-*.whl")
        print(strip_extensions(wheel, args.wheelhouse))


if __name__ == "__main__":
    main()
