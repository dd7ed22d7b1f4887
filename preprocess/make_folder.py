"""Create the folders the project expects: weights/ (checkpoints, e.g. the authors' released .tar files),
runs/ (outputs) and data/ (datasets, with an empty FaceForensics++ layout).

  python preprocess/make_folder.py          (from anywhere; as in the authors' README: cd preprocess; python make_folder.py)
"""
import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("weights", "runs", "data", "data/FaceForensics++/train_set", "data/FaceForensics++/test_set")


def main() -> None:
    argparse.ArgumentParser(prog="make_folder.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    for name in FOLDERS:
        (ROOT / name).mkdir(parents=True, exist_ok=True)
        print(f"ok  {ROOT / name}")


if __name__ == "__main__":
    main()
