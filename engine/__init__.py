"""The shared training engine: one concern per module.

  dist.py        devices, processes (torchrun), DDP wrapping, gathers across ranks
  amp.py         the autocast context, built once per run
  update.py      Adam, backward + step with non-finite losses skipped, fp16 loss scalers (Updater)
  batches.py     next_batch(): batches on the device, unreadable images counted and listed
  checkpoint.py  atomic saves, safe loads, the resumable checkpoint of a run (Checkpointer)
  loop.py        the stage loop: progress, logging, periodic checkpoints, signals
  logger.py      log.txt, train_log.jsonl, TensorBoard
  release.py     a run's folder, its release checkpoints, loading a detector from them
  run.py         starting a run: lock, checks, then writes (start_run -> Run)
"""
