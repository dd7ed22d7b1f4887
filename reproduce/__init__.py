"""Reproduce the paper's Table 1 or Table 2 (and the field's tables: --table dfb|df40|adapt) in one command, with
seeds and confidence intervals.

  python -m reproduce --table 1 [--seeds 3] [key=value ...]     # real data (configs/paths.yaml)
  python -m reproduce --table 2 --demo --seeds 1                # the embedded demo's analogues
  bash reproduce.sh --table 1 --dry-run                         # what would run, and what exists

It runs every training the table needs (Table 1: ff_wo_df/f2f/fs/nt x baseline and SupCon-MPL, whose run
also trains and evaluates the SupCon teacher; Table 2: sin x vanilla MPL and SupCon-MPL) once per seed
(777, 778, ...) through the train_*_model.sh scripts, each into its own run folder
<out_dir>/<protocol>-seed<seed>[-<hash of the overrides>]. Finished runs are skipped; unfinished ones are
resumed (--resume). Then it writes <out>/table<N>[-demo].md, .json and .png: every cell mean +- std over
seeds with the paper's value beside it, AUC in both definitions (from scores, and the paper's from hard
predictions), and SupCon-MPL minus each other method with a 95% confidence interval (paired bootstrap over
test videos, seeds pooled). A cell without a result is named, with the reason. The paper's numbers come
from reproduce/paper-tables.yaml (transcribed from the two result images of the authors' README).

  spec.py      what a table is: its rows, methods, metrics, and the paper's values (paper-tables.yaml)
  jobs.py      the trainings a table needs: their run folders, their state, running them
  tables.py    the results: mean +- std over seeds, paired-bootstrap intervals, the Markdown and the figure
  bench.py     the field's tables: DeepfakeBench's protocol (--table dfb), DF40 (df40), a new generator (adapt)
  __main__.py  the command line
"""
