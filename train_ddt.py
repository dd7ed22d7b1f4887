"""Train DDT (Deep Distribution Transfer; Aneja & Niessner 2020): a ResNet up to layer3 whose Gaussian output is
pulled towards its class's fixed mode; then, optionally, a few-shot transfer (methods/ddt.py).

Writes <out_dir>/<run_name>/ddt/{ddt.tar, config.yaml, log.txt, train_log.jsonl, splits.csv, checkpoints/}.
"""
from engine import cli
from utils import run_cli

EXAMPLE = "python train_ddt.py --config configs/demo.yaml ddt.steps=200"


def main(argv: list[str] | None = None) -> int:
    parsed = cli.training_command("train_ddt.py", __doc__, EXAMPLE, argv)
    if parsed is None:
        return 0
    from methods import ddt  # after the command line: --help need not wait for torch
    return cli.train(ddt.train, *parsed)


if __name__ == "__main__":
    run_cli(main)
