"""python -m models.fetch_weights NAME... [--weights-dir weights]

Download the ImageNet weights that `pretrained: imagenet` gives each backbone and store them as
<weights-dir>/<tag>.pth. Run it once where there is internet; training never downloads (models/weights.py).
Where it reaches (for a firewall's allow-list):
  resnet50, resnet101     torchvision's IMAGENET1K_V1 (the authors' weights), as timm republishes them on the
                          Hugging Face hub: https://huggingface.co/timm/resnet50.tv_in1k (resnet101.tv_in1k)
  efficientnet_b4, _b5    torchvision's IMAGENET1K_V1 from https://download.pytorch.org/models/
  any other timm name     timm's default weights for it, from the Hugging Face hub (or the URL timm names)
The exact address of each name is printed before it is fetched; offline, the command stops within seconds.
"""
from __future__ import annotations

import argparse
import sys

import torch

from models.weights import TORCHVISION, weights_source
from utils import HelpFormatter, UserError, resolve_path, run_cli


def address(source) -> str:
    """Where the weights of `source` are downloaded from."""
    return f"https://huggingface.co/{source.hf_hub_id}" if source.hf_hub_id else source.url or "timm's default"


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the URL's host opens within `timeout` seconds."""
    import socket
    from urllib.parse import urlparse
    host = urlparse(url).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def fetch(name: str) -> dict:
    source = weights_source(name)
    where = address(source)
    if where.startswith("https://") and not reachable(where):
        raise UserError(f"cannot reach {where} (offline, or blocked by a firewall): fetch the weights where there "
                        f"is internet and copy <weights-dir>/{source.tag}.pth here")
    print(f"{name}: {source.tag} from {where}", file=sys.stderr, flush=True)
    try:
        return _download(source)
    except Exception as err:  # noqa: BLE001 (the hub's and torch's errors: one line naming where)
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise UserError(f"downloading {source.tag} from {where} failed: {first[:200]}") from None


def _download(source) -> dict:
    if source.tag in TORCHVISION:
        import torchvision
        return torchvision.models.get_weight(TORCHVISION[source.tag]).get_state_dict(progress=True)
    import timm
    return timm.create_model(source.tag, pretrained=True).state_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.fetch_weights", description=__doc__,
                                     formatter_class=HelpFormatter,
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
        print(f"{name}: saved {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
