"""Train Tar (Lee, Tariq, Kim, Woo 2021): a residual autoencoder whose latent halves stand for fake and real;
then, optionally, a sequential transfer to targets with a few labels (methods/tar.py).

Writes <out_dir>/<run_name>/tar/{tar.tar, config.yaml, log.txt, train_log.jsonl, splits.csv, checkpoints/}.
"""
from engine import cli
from utils import run_cli

EXAMPLE = "python train_tar.py --config configs/demo.yaml tar.steps=200"


def main(argv: list[str] | None = None) -> int:
    parsed = cli.training_command("train_tar.py", __doc__, EXAMPLE, argv)
    if parsed is None:
        return 0
    from methods import tar  # after the command line: --help need not wait for torch
    return cli.train(tar.train, *parsed)


if __name__ == "__main__":
    run_cli(main)
