"""Export a training run's EMA weights as a model directory (`discodiff sample --model OUT_DIR` loads it).

    python train/export.py RUN_DIR_OR_CHECKPOINT OUT_DIR [--init-from DIR]

OUT_DIR must be new, empty or a model directory (pipeline.json) of the run's family; for the diffusion family,
exporting into a model directory replaces only the trained stage. The model is written to a temporary folder and renamed into place, so a failed
export leaves OUT_DIR as it was.
"""

import argparse

from discodiff.cli.errors import run_script
from discodiff.training import export_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="A run directory (its latest checkpoint is used) or a checkpoint-N directory.")
    parser.add_argument("out_dir", help="The model directory to write or update.")
    parser.add_argument("--init-from", default=None, help="A copy of the run's model.init_from, for a run started "
                        "from a model that is not at its recorded path here (the run moved).")
    args = parser.parse_args()
    print(f"wrote {export_pipeline(args.source, args.out_dir, args.init_from)}")


if __name__ == "__main__":
    run_script(main)
