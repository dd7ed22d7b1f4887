"""The methods: each module holds a method's step function(s), read like the paper's diagram (a plain function
of its batch), and its recipe `train(cfg, opts)`, read top to bottom (set-up -> models, losses, optimizers ->
one stage.run per stage -> release files). The train_*.py scripts are their command lines.

  pt.py          the pretrained baseline: backbone + 2-way head, cross-entropy
  supcon.py      the SupCon teacher: SupCon network, then a linear classifier on the frozen encoder
  supconmpl.py   SupCon-MPL: teacher-student Meta Pseudo Labels with SupCon, then the student's fine-tuning
  mpl.py         vanilla MPL, the paper's Table 2 baseline: the baseline's network as teacher and student
"""
