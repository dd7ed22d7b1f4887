${NPROC:+python -m torch.distributed.run ${TORCHRUN_ARGS:---standalone} --nproc_per_node $NPROC --no-python} python train_ddt.py "$@" || exit
python evaluate.py --method ddt "$@"
