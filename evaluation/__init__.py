"""Evaluation: what evaluate.py, predict.py and reproduce compute and draw from a detector's scores.

  metrics.py     ROC AUC, AP, F1 (scikit-learn), EER, calibration, video aggregation, the results table
  plots.py       ROC curves, training curves, embeddings, reliability diagrams
  cams.py        Grad-CAM heat maps of test decisions and their contact sheet (evaluate.py --cam)
  robustness.py  the sweep of test-time degradations (evaluate.py --perturb)
  report.py      tables of finished runs, Markdown or one HTML page (python -m evaluation.report [--html])
  html.py        self-contained HTML pages (plots embedded) of runs and reproduced tables
  tensorboard.py an evaluation in the run's TensorBoard log (metrics, plots, hparams)
"""
