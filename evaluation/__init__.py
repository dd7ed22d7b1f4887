"""Evaluation: what evaluate.py, predict.py and reproduce compute and draw from a detector's scores.

  metrics.py     ROC AUC, AP, F1 (scikit-learn), EER, calibration, video aggregation, the results table
  plots.py       ROC curves, training curves, embeddings, reliability diagrams
  cams.py        Grad-CAM heat maps of test decisions and their contact sheet (evaluate.py --cam)
  robustness.py  the sweep of test-time degradations (evaluate.py --perturb)
  report.py      a Markdown table of finished runs (python -m evaluation.report)
"""
