"""Create the folders the project expects: weights/ for checkpoints, data/ for datasets, runs/ for outputs.

Run from anywhere: python preprocess/make_folder.py (or python -m preprocess.make_folder).
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("weights", "runs", "data", "data/FaceForensics++/train_set", "data/FaceForensics++/test_set")


def main() -> None:
    for name in FOLDERS:
        (ROOT / name).mkdir(parents=True, exist_ok=True)
        print(f"ok  {ROOT / name}")


if __name__ == "__main__":
    main()
