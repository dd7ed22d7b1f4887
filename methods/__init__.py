"""The methods: each module holds a method's step function(s), read like the paper's diagram (a plain function
of its batch), and its recipe `train(cfg, opts)`, read top to bottom (set-up -> models, losses, optimizers ->
one stage.run per stage -> release files). The train_*.py scripts are their command lines.

  pt.py          the pretrained baseline: backbone + 2-way head, cross-entropy
  supcon.py      the SupCon teacher: SupCon network, then a linear classifier on the frozen encoder
  supconmpl.py   SupCon-MPL: teacher-student Meta Pseudo Labels with SupCon, then the student's fine-tuning
  mpl.py         vanilla MPL, the paper's Table 2 baseline: the baseline's network as teacher and student
  tar.py         Tar: a residual autoencoder whose latent halves stand for fake and real (Table 2's "Tar [34]")
  ddt.py         DDT: a ResNet to layer3 mapping images to Gaussians pulled to their class's mode ("DDT [31]")
  transfer.py    what Tar and DDT share: plateau decay / early stopping, the few-shot transfer stages
"""


def trained_config(method: str, cfg: dict) -> dict:
    """The config a `method` run records for a command's config: Tar and DDT set their own inputs (run_config);
    the others train with it as it is."""
    if method in ("tar", "ddt"):
        import importlib
        return importlib.import_module(f"methods.{method}").run_config(cfg)
    return cfg
