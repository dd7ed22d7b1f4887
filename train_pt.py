"""Train the pretrained baseline: an (ImageNet-initialised) backbone with a 2-way head, cross-entropy on
augmented labeled images (methods/pt.py).

Writes <out_dir>/<run_name>/pt/{pt.tar, config.yaml, log.txt, train_log.jsonl, splits.csv, checkpoints/}.
"""
from engine import cli
from utils import run_cli

EXAMPLE = "python train_pt.py --config configs/demo.yaml pt.steps=200"


def main(argv: list[str] | None = None) -> int:
    parsed = cli.training_command("train_pt.py", __doc__, EXAMPLE, argv)
    if parsed is None:
        return 0
    from methods import pt  # after the command line: --help need not wait for torch
    return cli.train(pt.train, *parsed)


if __name__ == "__main__":
    run_cli(main)
