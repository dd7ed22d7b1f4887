"""Train the SupCon teacher: (a) encoder + projection head with the supervised contrastive loss on two
augmented views of each labeled image, (b) a linear classifier with cross-entropy on the frozen encoder
(methods/supcon.py).

Writes <out_dir>/<run_name>/supcon/{supcon_encoder.tar, supcon_classifier.tar, config.yaml, log.txt, checkpoints/}.
"""
from engine.config import train_command
from utils import run_cli

EXAMPLE = "python train_supcon.py --config configs/demo.yaml supcon.steps=200"


def main(argv: list[str] | None = None) -> int:
    return train_command("train_supcon.py", __doc__, EXAMPLE, "methods.supcon", argv)


if __name__ == "__main__":
    run_cli(main)
