"""Ship an exported model: bundle its codec and text encoder, store every weight in fp16, add the model card and
record the checksums (discodiff/pretrained/__init__.py says what a shipped model is).

    python train/ship.py MODEL_DIR --card CARD.md [--out DIR] [--overwrite]

Without --out it writes discodiff/pretrained/bach-chorales, the model `discodiff sample` uses without --model.
"""

import argparse

from discodiff.cli.errors import run_script
from discodiff.pretrained import directory_bytes, shipped_model_dir
from discodiff.pretrained.ship import ship_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="An exported model directory (train/export.py).")
    parser.add_argument("--card", required=True, help="The model card (markdown), written as README.md.")
    parser.add_argument("--out", default=None, help=f"Where to write it [default: {shipped_model_dir()}].")
    parser.add_argument("--overwrite", action="store_true", help="Replace an earlier shipped model there.")
    args = parser.parse_args()
    out = ship_model(args.model_dir, args.card, args.out, args.overwrite)
    print(f"wrote {out} ({directory_bytes(out) / 2**20:.1f} MiB, checksums recorded)")


if __name__ == "__main__":
    run_script(main)
