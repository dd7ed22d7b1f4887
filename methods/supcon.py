"""The SupCon teacher: (a) encoder + projection head trained with the supervised contrastive loss on two
augmented views of each labeled image, (b) a linear classifier trained with cross-entropy on the frozen
encoder. Its step functions serve the SupCon-MPL student's fine-tuning too."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets.loaders import train_batches
from datasets.protocols import record_splits, role_samples
from engine.dist import barrier, distribute, gather, unwrap
from engine.run import RunOptions, start_run
from engine.setup import prepare
from engine.update import make_optimizer
from losses import SupConLoss
from models import EncoderClassifier, LinearClassifier, SupConNet

STAGES = ["supcon", "classifier"]


def supcon_features(net: nn.Module, views: list[torch.Tensor], amp) -> torch.Tensor:
    """The network's features of V views of a batch, stacked per sample and gathered over ranks:
    [B_global, V, D] (this rank's rows keep their gradient)."""
    b = views[0].shape[0]
    x = torch.cat(views)  # [V*B, 3, H, W], view-major
    with amp:
        z = net(x)  # [V*B, D]
    return gather(torch.stack(z.float().split(b), dim=1))  # [B, V, D] -> [B_global, V, D]


def supcon_step(net: nn.Module, opt: torch.optim.Optimizer, criterion: SupConLoss, v1: torch.Tensor,
                v2: torch.Tensor, y: torch.Tensor, update, amp) -> dict:
    """One step of SupCon on two views v1, v2 [B, 3, H, W] of each labeled image (labels y [B]), over the
    global batch; trains encoder and head. update(opt, loss, name) applies the update."""
    net.train()
    features = supcon_features(net, [v1, v2], amp)  # [B_global, 2, D]
    loss = criterion(features, gather(y))
    update(opt, loss, "supcon loss")
    return {"loss": loss.detach()}


def classifier_step(encoder: nn.Module, classifier: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                    y: torch.Tensor, update, amp) -> dict:
    """One step of cross-entropy on frozen encoder features of x [B, 3, H, W] (encoder in eval mode, no
    gradient), labels y [B]."""
    encoder.eval()
    classifier.train()
    with torch.no_grad(), amp:
        feats = encoder(x)  # [B, F]
    logits = classifier(feats.float())  # [B, 2]
    loss = F.cross_entropy(logits, y)
    update(opt, loss, "classifier loss")
    return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}


def train(cfg: dict, opts: RunOptions = RunOptions()) -> dict:
    """Both stages of the SupCon teacher; returns the paths written."""
    sc, balance = cfg["supcon"], cfg["data"]["balance"]
    t = prepare(cfg)  # device, seed, CUDA graphs, autocast, the data sets (checked before anything is written)
    labeled = role_samples(t.sets, "labeled", {"supcon.batch_size": sc["batch_size"],
                                               "supcon.classifier_batch_size": sc["classifier_batch_size"]})

    # Models, loss, optimizers, run
    net = distribute(SupConNet(cfg["backbone"], cfg["pretrained"], sc["feat_dim"], cfg["weights_dir"]), t.device,
                     cfg)
    classifier = distribute(LinearClassifier(unwrap(net).dim), t.device, cfg)
    criterion = SupConLoss(sc["temperature"])
    opt_net = make_optimizer(net.parameters(), sc["lr"])
    opt_cls = make_optimizer(classifier.parameters(), sc["classifier_lr"])
    run = start_run(cfg, "supcon", STAGES, t.sets, t.device, opts, t.graphs, net=net, classifier=classifier,
                    opt_net=opt_net, opt_cls=opt_cls)
    record_splits(cfg, t.sets, run.dir)
    run.logger.info(f"SupCon teacher: backbone {cfg['backbone']}, {sc['steps']} + {sc['classifier_steps']} steps "
                    f"on {t.device}; run folder {run.dir}; labeled: {len(labeled)} images")
    for note in t.notes:
        run.logger.info(note)

    # Stage (a): SupCon network
    stage = run.stage("supcon", sc["steps"])
    pairs = train_batches(labeled, cfg, sc["batch_size"], 2, balance, "supcon", stage.start, t.device)
    stage.run(lambda v1, v2, y: supcon_step(net, opt_net, criterion, v1, v2, y, run.update, t.amp), pairs,
              [opt_net], val=run.val.supcon(net, criterion, keep=net))
    encoder_path = run.save_release("encoder", net, "supcon_encoder", sc["steps"], opt_net)

    # Stage (b): linear classifier on the frozen encoder
    stage = run.stage("classifier", sc["classifier_steps"])
    singles = train_batches(labeled, cfg, sc["classifier_batch_size"], 1, balance, "classifier", stage.start,
                            t.device)
    encoder = unwrap(net).encoder
    detector = EncoderClassifier(encoder, classifier)
    stage.run(lambda x, y: classifier_step(encoder, classifier, opt_cls, x, y, run.update, t.amp), singles,
              [opt_cls], val=run.val.classifier(detector, keep=classifier))
    classifier_path = run.save_release("classifier", classifier, "supcon_classifier", sc["classifier_steps"], opt_cls,
                                       belongs_to=encoder_path, detector=detector)
    run.finish()
    barrier()  # every rank may read the saved files next (SupCon-MPL)
    run.logger.info(f"saved {encoder_path} and {classifier_path}")
    return {"encoder": encoder_path, "classifier": classifier_path}
