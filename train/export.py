"""Export a training run's EMA weights as a pipeline directory (`discodiff sample --model OUT_DIR` loads it).

    python train/export.py RUN_DIR_OR_CHECKPOINT OUT_DIR

Exporting into a directory that already holds a pipeline replaces only the trained stage.
"""

import argparse

from discodiff.training import export_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="A run directory (its latest checkpoint is used) or a checkpoint-N directory.")
    parser.add_argument("out_dir", help="The pipeline directory to write or update.")
    args = parser.parse_args()
    try:
        print(f"wrote {export_pipeline(args.source, args.out_dir)}")
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
