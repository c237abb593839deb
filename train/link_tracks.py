"""Link the rendered tracks of a list into one folder with their captions, the input of `discodiff prepare`.

    python train/link_tracks.py LIST.txt --rendered RENDERED_ROOT --out DIR --split train|validation [--overwrite]

LIST.txt names one track per line as `<rendering>/<track>` under RENDERED_ROOT (`seed0/bach-bwv130.6`);
`train/diffusion_tracks/` holds the shipped model's two lists. Every track must be a Bach piece of --split.
"""

import argparse

from discodiff.cli.errors import run_script
from discodiff.corpus.selection import link_tracks, read_track_list


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("track_list", help="One '<rendering>/<track>' per line ('#' comments).")
    parser.add_argument("--rendered", required=True, help="The root the names are relative to (e.g. data/bach).")
    parser.add_argument("--out", required=True, help="The folder to write: a symlink per track and captions.jsonl.")
    parser.add_argument("--split", required=True, choices=("train", "validation"), help="The split every track must be of.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an earlier folder written by this script.")
    args = parser.parse_args()
    tracks = read_track_list(args.track_list)
    out = link_tracks(tracks, args.rendered, args.out, args.split, overwrite=args.overwrite)
    print(f"wrote {out}: {len(tracks)} {args.split}-split tracks and their captions")


if __name__ == "__main__":
    run_script(main)
