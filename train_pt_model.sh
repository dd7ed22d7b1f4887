python train_pt.py "$@" || exit 1
python evaluate.py --method pt "$@"
