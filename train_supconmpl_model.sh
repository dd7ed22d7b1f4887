${NPROC:+python -m torch.distributed.run ${TORCHRUN_ARGS:---standalone} --nproc_per_node $NPROC --no-python} python train_supconmpl.py "$@" || exit
python evaluate.py --method supcon "$@"; teacher=$?
python evaluate.py --method supconmpl "$@" || exit
exit "$teacher"
