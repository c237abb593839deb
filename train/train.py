"""Train one stage of a DiscoDiff pipeline.

    accelerate launch train/train.py --config configs/train/tiny.yaml [--resume latest] [key=value ...]

See train/README.md for one GPU, many GPUs, many nodes and FSDP.
"""

import argparse

from discodiff.training import TrainConfig, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="Training config, e.g. configs/train/tiny.yaml.")
    parser.add_argument("--resume", help="'latest' (the newest checkpoint of output_dir; a fresh start if none) or a checkpoint directory.")
    parser.add_argument("overrides", nargs="*", help="Config overrides key.sub=value, e.g. max_steps=1000 data.batch_size=16.")
    args = parser.parse_intermixed_args()
    try:
        config = TrainConfig.from_yaml(args.config, args.overrides)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    Trainer(config).train(resume=args.resume)


if __name__ == "__main__":
    main()
