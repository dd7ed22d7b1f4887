"""Train the SupCon teacher: (a) encoder + projection head with the supervised contrastive loss on two
augmented views of each labeled image, (b) a linear classifier with cross-entropy on the frozen encoder
(methods/supcon.py).

Writes <out_dir>/<run_name>/supcon/{supcon_encoder.tar, supcon_classifier.tar, config.yaml, log.txt, checkpoints/}.
"""
from engine import cli
from utils import run_cli

EXAMPLE = "python train_supcon.py --config configs/demo.yaml supcon.steps=200"


def main(argv: list[str] | None = None) -> int:
    parsed = cli.training_command("train_supcon.py", __doc__, EXAMPLE, argv)
    if parsed is None:
        return 0
    from methods import supcon  # after the command line: --help need not wait for torch
    return cli.train(supcon.train, *parsed)


if __name__ == "__main__":
    run_cli(main)
