"""The shared training engine: one concern per module.

  schema.py      every config key: default, meaning, range (DEFAULTS, the checks, --help's key list)
  config.py      loading (defaults <- YAML file <- key=value overrides) and validation of a config
  cli.py         the common command line of the training scripts and evaluate.py
  options.py     how a training command treats its run folder (RunOptions: --resume, --overwrite, ...)
  setup.py       what every train() begins with: device, seed, CUDA graphs, autocast, the data sets
  dist.py        devices, processes (torchrun), DDP wrapping, gathers across ranks
  amp.py         the autocast context, built once per run
  update.py      Adam, backward + step with non-finite losses skipped, fp16 loss scalers (Updater)
  batches.py     batches onto the device, unreadable images counted and listed
  graphs.py      CUDA graphs of whole training steps (StepGraph) and the loop's step call (stepper)
  checkpoint.py  atomic saves, safe loads, the resumable checkpoint of a run (Checkpointer)
  loop.py        the stage loop: batches, progress, logging, periodic checkpoints, signals
  progress.py    progress lines of long commands (evaluate, predict, extract_faces), on a terminal or not
  logger.py      log.txt, train_log.jsonl, TensorBoard
  release.py     a run's folder, its release checkpoints, loading a detector, the weights record of results
  run.py         starting a run: lock, checks (never overwriting a run), then writes (start_run -> Run)
  validate.py    validation passes, the threshold and temperature chosen on the validation set
"""
