python train_supcon.py "$@" || exit 1
python evaluate.py --method supcon "$@"
