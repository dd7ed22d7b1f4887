python train_supconmpl.py "$@" || exit 1
python evaluate.py --method supcon "$@"
python evaluate.py --method supconmpl "$@"
