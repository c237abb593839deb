"""Train a model of any family (for the diffusion family, one stage: task.stage=primary|secondary).

    accelerate launch train/train.py --config configs/train/tiny.yaml [--resume latest] [--overwrite] [key=value ...]

The model config (model.config, or model.init_from) names the family; its training task reads the task: section.

A new run needs a new or empty output_dir; to continue a run pass --resume, to start it over --overwrite.
Everything that can be checked (config, data, output_dir, --resume) is checked before anything is built or
written. See train/README.md for one GPU, many GPUs, many nodes and FSDP.
"""

import argparse

from discodiff.cli.errors import run_script
from discodiff.training import TrainConfig, Trainer
from discodiff.training.trainer import check_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="Training config, e.g. configs/train/tiny.yaml.")
    parser.add_argument("--resume", help="Continue the run in output_dir: 'latest' (its newest checkpoint; a fresh start "
                                         "if it has none yet) or one of its checkpoint directories.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Allow deleting earlier work in output_dir: without --resume, start its run over (its "
                             "checkpoints, metrics, samples and logs are deleted); with --resume CHECKPOINT, delete "
                             "the checkpoints newer than CHECKPOINT.")
    parser.add_argument("overrides", nargs="*", help="Config overrides key.sub=value, e.g. max_steps=1000 "
                                                     "data.batch_size=16 task.stage=secondary.")
    args = parser.parse_intermixed_args()
    config = TrainConfig.from_yaml(args.config, args.overrides)
    check_run(config, resume=args.resume, overwrite=args.overwrite)
    Trainer(config).train(resume=args.resume, overwrite=args.overwrite)


if __name__ == "__main__":
    run_script(main)
