"""Train vanilla Meta Pseudo Labels (Pham et al., CVPR 2021), the baseline of the paper's Table 2: teacher and
student are the baseline's network; the teacher pseudo-labels unlabeled images, the student learns them with
cross-entropy, and the change of the student's labeled loss (h) weights the teacher's pseudo-label loss; then
the student is fine-tuned on the labeled data (methods/mpl.py). Same data, batch sizes, optimiser and steps as
SupCon-MPL; options (UDA, a baseline for h, an EMA student) under mpl_options, all off by default.

Writes <out_dir>/<run_name>/mpl/{mpl.tar, config.yaml, log.txt, train_log.jsonl, splits.csv, checkpoints/}.
"""
from engine import cli
from utils import run_cli

EXAMPLE = "python train_mpl.py --config configs/demo.yaml mpl.steps=100"


def main(argv: list[str] | None = None) -> int:
    parsed = cli.training_command("train_mpl.py", __doc__, EXAMPLE, argv)
    if parsed is None:
        return 0
    from methods import mpl  # after the command line: --help need not wait for torch
    return cli.train(mpl.train, *parsed)


if __name__ == "__main__":
    run_cli(main)
