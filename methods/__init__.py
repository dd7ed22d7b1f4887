"""The methods: each module holds a method's step function(s), read like the paper's diagram, and its
recipe `train(cfg, resume)`, read top to bottom (config -> data, models, losses, optimizers -> loop ->
save). The train_*.py scripts are their command lines.

  pt.py          the pretrained baseline: backbone + 2-way head, cross-entropy
  supcon.py      the SupCon teacher: SupCon network, then a linear classifier on the frozen encoder
  supconmpl.py   SupCon-MPL: teacher-student Meta Pseudo Labels with SupCon, then the student's fine-tuning
"""
