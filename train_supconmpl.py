"""Train SupCon-MPL: a SupCon teacher pseudo-labels unlabeled images, a student learns from them with
SupCon, and the change in the student's labeled loss (h) feeds back into the teacher's classifier
(Meta Pseudo Labels). Then the student is fine-tuned on the labeled data (SupCon, then its classifier)
and saved as the SupCon-MPL model. If the teacher's checkpoint is missing, the teacher is trained first
(methods/supconmpl.py).

Writes <out_dir>/<run_name>/supconmpl/{mpl_supcon_encoder.tar, mpl_supcon_classifier.tar, config.yaml, log.txt}.
"""
from engine import cli
from utils import run_cli

EXAMPLE = "python train_supconmpl.py --config configs/demo.yaml mpl.steps=100"


def main(argv: list[str] | None = None) -> int:
    parsed = cli.training_command("train_supconmpl.py", __doc__, EXAMPLE, argv)
    if parsed is None:
        return 0
    from methods import supconmpl  # after the command line: --help need not wait for torch
    return cli.train(supconmpl.train, *parsed)


if __name__ == "__main__":
    run_cli(main)
