"""Make the shipped sample scene (data/train/) from a scene of imc-mini, downscaled.

    python data/make_sample.py [--source ../shared/data/imc-mini] [--scene herzjesu-p8] [--size 768]

Downscaling changes intrinsics only, so the world-to-camera poses (R, t) stay exact.
"""

import argparse
import os
from pathlib import Path

import pandas as pd
from PIL import Image

HERE = Path(__file__).resolve().parent


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = os.environ.get("IMC_DATA_DIR", HERE.parent.parent / "shared/data/imc-mini")
    p.add_argument("--source", type=Path, default=Path(default))
    p.add_argument("--scene", default="herzjesu-p8")
    p.add_argument("--size", type=int, default=768, help="longest side of the sample images")
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args()

    src = args.source / "train"
    labels = pd.read_csv(src / "train_labels.csv", dtype=str)
    labels = labels[labels["scene"] == args.scene]
    if labels.empty:
        raise SystemExit(f"{src / 'train_labels.csv'}: no scene {args.scene!r}")
    dst = args.out / "train"
    (dst / args.scene / "images").mkdir(parents=True, exist_ok=True)
    for dataset, name in zip(labels["dataset"], labels["image_name"]):
        with Image.open(src / dataset / "images" / name) as im:
            scale = args.size / max(im.size)
            small = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
            small.save(dst / dataset / "images" / name, quality=92)
    labels.to_csv(dst / "train_labels.csv", index=False)
    cats = pd.read_csv(src / "categories.csv", dtype=str)
    cats[cats["scene"] == args.scene].to_csv(dst / "categories.csv", index=False)
    print(f"wrote {len(labels)} images of {args.scene} to {dst}")


if __name__ == "__main__":
    main()
