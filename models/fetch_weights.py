"""python -m models.fetch_weights NAME... [--weights-dir weights]

Download the ImageNet weights that `pretrained: imagenet` gives each backbone (resnet50 and resnet101:
torchvision's IMAGENET1K_V1, as the authors; efficientnet_b4/b5: torchvision's IMAGENET1K_V1; other timm
names: timm's default weights) and store them as <weights-dir>/<tag>.pth. Run it once where there is
internet; training never downloads (see models/weights.py).
"""
from __future__ import annotations

import argparse
import sys

import torch

from models.weights import TORCHVISION, weights_source
from utils import resolve_path, run_cli


def fetch(name: str) -> dict:
    source = weights_source(name)
    if source.tag in TORCHVISION:
        import torchvision
        return torchvision.models.get_weight(TORCHVISION[source.tag]).get_state_dict(progress=True)
    import timm
    return timm.create_model(source.tag, pretrained=True).state_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.fetch_weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python -m models.fetch_weights resnet50 efficientnet_b4")
    parser.add_argument("names", nargs="+", help="backbone names (resnet50, resnet101, efficientnet_b4, any timm name)")
    parser.add_argument("--weights-dir", default="weights", help="where to store them (default: weights)")
    args = parser.parse_args(argv)
    folder = resolve_path(args.weights_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        tag = weights_source(name).tag
        path = folder / f"{tag}.pth"
        torch.save(fetch(name), path)
        print(f"{name}: {tag} -> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
