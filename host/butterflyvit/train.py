"""Training and evaluation, the same code for ButterflyViT and both baselines.

Single process, or one process per device under `torchrun --nproc_per_node=N` (PyTorch
DDP; gloo on CPU, nccl on GPU). Everything random is a function of (seed, step, rank):
the data order of epoch e is a permutation drawn from (seed, e); before step s every rank
reseeds torch with (seed, s, rank) for augmentation and router noise. So a run resumed
from a checkpoint at any step continues exactly as the uninterrupted run would have.
"""

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from . import train_kernels
from .checkpoint import build_model, load_checkpoint, save_checkpoint
from .config import ModelConfig
from .data import augment, load_dataset, normalize
from .errors import UserError
from .moe import neighbour_agreement
from .vit import routing_stats


@dataclass
class TrainConfig:
    dataset: str = "fashion-mnist"
    data: str | None = None          # data location (default per data set)
    cache_dir: str | None = None
    image_size: int | None = None    # the folder data set's input size (default 32)
    epochs: float = 10.0             # may be fractional
    steps: int | None = None         # total optimiser steps; overrides epochs
    batch_size: int = 128            # global, split over the DDP ranks
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    angle_lr_scale: float = 10.0     # butterfly angles' learning rate = lr * this (docs/training.md)
    warmup_steps: int | None = None  # default: 5% of the steps, at most 500
    clip: float = 1.0
    balance_weight: float = 0.01     # load-balancing loss weight
    smooth_weight: float = 0.0       # spatial smoothness regulariser weight (0 = off)
    label_smoothing: float = 0.0
    augment: bool = True
    pad: int | None = None           # crop padding; default 2 (28 px), 4 (32 px), 1 (8 px)
    flip: bool | None = None         # horizontal flips; default on except for digits
    train_subset: int | None = None  # use only the first N training images
    eval_batch_size: int = 500
    eval_every: int = 1              # evaluate every N epochs (0: only at the end)
    save_every: int = 0              # also checkpoint every N steps (0: at epoch ends)
    stop_after: int | None = None    # stop after this step with a checkpoint (resume later)
    seed: int = 0
    out: str | None = None           # checkpoint path
    export: str | None = None        # final model-only checkpoint (no optimiser state)
    resume: str | None = None
    threads: int | None = None
    progress: bool = True
    log: str | None = None           # JSON lines of evaluations
    metrics_out: str | None = None   # final metrics as JSON

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ----------------------------------------------------------------------------- helpers

class Dist:
    """The process group, if torchrun started us; a single process otherwise."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{self.local_rank}" if self.cuda else "cpu")
        self.enabled = self.world > 1
        self.owns_group = False
        if self.cuda:
            torch.cuda.set_device(self.device)
        if self.enabled and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.cuda else "gloo")
            self.owns_group = True

    @property
    def main(self):
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            t = t.to(self.device)
            torch.distributed.all_reduce(t)
        return t.cpu()

    def barrier(self):
        if self.enabled:
            torch.distributed.barrier()

    def close(self):
        if self.owns_group:
            torch.distributed.destroy_process_group()


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + rank * 104_729 + 1) % (2 ** 63)


def lr_lambda(warmup: int, total: int, min_ratio: float):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return f


NO_DECAY_NAMES = ("pos_embed", "phi", "theta")
ANGLE_NAMES = ("phi", "theta", "angles")


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                 angle_lr_scale: float = 1.0):
    """Weight decay on matrices only: not on biases, norms, the position embedding or the
    butterfly angles (decay would pull every expert towards the identity rotation).
    With angle_lr_scale != 1 the butterfly angles get their own group at lr * angle_lr_scale
    (the schedule scales every group alike); at 1 the groups are exactly the two above."""
    decay, no_decay, angles = [], [], []
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ANGLE_NAMES and angle_lr_scale != 1.0:
            angles.append(p)
        elif p.ndim < 2 or leaf in NO_DECAY_NAMES:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if angles:
        groups.append({"params": angles, "weight_decay": 0.0, "lr": lr * angle_lr_scale})
    return groups


def model_config_for(cfg: ModelConfig, ds) -> ModelConfig:
    """The config with image size, channels and classes taken from the data set."""
    d = cfg.to_dict()
    d.update(image_size=ds.image_size, in_channels=ds.channels, num_classes=len(ds.classes))
    return ModelConfig.from_dict(d)


# -------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model, split, mean, std, batch_size=500, dist=None, device="cpu") -> dict:
    """Top-1 accuracy, loss, expert utilisation and routing smoothness on a split.

    Under DDP each rank takes every world-th image and the sums are all-reduced.
    `agreement` is the fraction of 4-neighbour patch pairs whose top-1 experts agree,
    averaged over MoE layers (per layer in `agreement_per_layer`)."""
    was_training = model.training
    model.eval()
    rank, world = (dist.rank, dist.world) if dist else (0, 1)
    idx = torch.arange(rank, len(split), world)
    cfg = model.cfg
    n_moe = sum(1 for b in model.blocks if hasattr(b.ffn, "router"))
    e = cfg.num_experts if n_moe else 1
    correct = torch.zeros(()); loss = torch.zeros(()); count = torch.zeros(())
    counts = torch.zeros(max(n_moe, 1), e)
    same = torch.zeros(max(n_moe, 1)); pairs = torch.zeros(max(n_moe, 1))
    for i in range(0, len(idx), batch_size):
        j = idx[i:i + batch_size]
        x = normalize(split.images[j], mean, std).to(device)
        y = split.labels[j].to(device)
        logits, aux = model(x, return_aux=True)
        correct += (logits.argmax(-1) == y).sum().cpu()
        loss += F.cross_entropy(logits, y, reduction="sum").cpu()
        count += len(j)
        if aux["counts"] is not None:
            counts += aux["counts"].cpu().float()
            for layer, t in enumerate(aux["top1"]):
                s, p = neighbour_agreement(t.cpu(), cfg.grid)
                same[layer] += s; pairs[layer] += p
    tot = torch.cat([torch.stack([correct, loss, count]), counts.reshape(-1), same, pairs])
    if dist is not None:
        tot = dist.all_sum(tot)
    correct, loss, count = tot[0], tot[1], tot[2]
    counts = tot[3:3 + counts.numel()].reshape(counts.shape)
    same, pairs = tot[3 + counts.numel():3 + counts.numel() + len(same)], tot[-len(pairs):]
    out = {"test_acc": float(correct / count), "test_loss": float(loss / count),
           "test_images": int(count)}
    if n_moe:
        agree = (same / pairs.clamp_min(1)).tolist()
        out["agreement_per_layer"] = [round(a, 4) for a in agree]
        out["agreement"] = sum(agree) / len(agree)
        out["utilisation"] = routing_stats(counts)
    if was_training:
        model.train()
    return out


def evaluate_both_routings(model, split, mean, std, batch_size=500, dist=None, device="cpu"):
    """Evaluate as configured and, for MoE models, with smoothed routing switched the other
    way (its effect at inference without retraining) under key "alt_routing"."""
    res = evaluate(model, split, mean, std, batch_size, dist, device)
    if any(hasattr(b.ffn, "router") for b in model.blocks):
        on = model.cfg.smooth_routing
        model.set_smooth_routing(not on)
        try:
            alt = evaluate(model, split, mean, std, batch_size, dist, device)
        finally:
            model.set_smooth_routing(on)
        res["alt_routing"] = {"smooth_routing": not on, "test_acc": alt["test_acc"],
                              "agreement": alt.get("agreement")}
    return res


# ------------------------------------------------------------------------------ training

def train(model_cfg: ModelConfig, tc: TrainConfig) -> dict:
    """Train (or resume) and return the final metrics. Writes tc.out if given."""
    dist = Dist()
    try:
        return _train(model_cfg, tc, dist)
    finally:
        dist.close()


def _log(msg, dist):
    if dist.main:
        print(msg, file=sys.stderr, flush=True)


def _train(model_cfg, tc, dist):
    if tc.threads:
        torch.set_num_threads(tc.threads)
    ckpt = None
    if tc.resume:
        ckpt = load_checkpoint(tc.resume)
        model_cfg = ModelConfig.from_dict(ckpt["config"])
        saved_train = dict(ckpt.get("train", {}))
        # checkpoints from before angle_lr_scale existed were trained with scale 1
        saved_train.setdefault("angle_lr_scale", 1.0)
        saved = TrainConfig.from_dict(saved_train)
        # the run's definition comes from the checkpoint; only where/how to run may change
        keep = {"out", "export", "resume", "stop_after", "threads", "progress", "log", "metrics_out", "data",
                "cache_dir", "eval_batch_size"}
        tc = TrainConfig(**{f.name: getattr(tc if f.name in keep else saved, f.name)
                            for f in fields(TrainConfig)})

    ds = load_dataset(tc.dataset, tc.data, tc.cache_dir, tc.image_size)
    if ckpt is None:
        model_cfg = model_config_for(model_cfg, ds)
    train_split = ds.train
    if tc.train_subset:
        train_split = type(ds.train)(ds.train.images[:tc.train_subset],
                                     ds.train.labels[:tc.train_subset])
    mean, std = (ckpt["normalize"]["mean"], ckpt["normalize"]["std"]) if ckpt else (ds.mean, ds.std)

    if tc.batch_size % dist.world:
        raise UserError(f"--batch-size {tc.batch_size} is not divisible by {dist.world} processes")
    local_bs = tc.batch_size // dist.world
    steps_per_epoch = len(train_split) // tc.batch_size
    if steps_per_epoch < 1:
        raise UserError(f"--batch-size {tc.batch_size} exceeds the {len(train_split)} training images")
    total = tc.steps if tc.steps else max(1, round(tc.epochs * steps_per_epoch))
    warmup = tc.warmup_steps if tc.warmup_steps is not None else min(500, max(1, total // 20))
    pad = tc.pad if tc.pad is not None else {28: 2, 32: 4}.get(ds.image_size, 1)
    flip = tc.flip if tc.flip is not None else tc.dataset != "digits"

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    model = build_model(model_cfg).to(dist.device)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay, tc.lr, tc.angle_lr_scale), lr=tc.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total, tc.min_lr / tc.lr))
    step, history = 0, []
    if ckpt:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        step = ckpt["step"]
        history = ckpt.get("metrics", {}).get("history", [])
        _log(f"resumed {tc.resume} at step {step}/{total}", dist)
    ddp = model
    if dist.enabled:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if dist.cuda else None)

    n_params = sum(p.numel() for p in model.parameters())
    _log(f"{model_cfg.ffn} ViT, {n_params:,} parameters, {tc.dataset} "
         f"{len(train_split)} train / {len(ds.test)} test, {total} steps "
         f"({steps_per_epoch}/epoch) of {tc.batch_size} on {dist.world} x {dist.device}", dist)
    if model_cfg.ffn == "butterfly" and not dist.cuda:
        why = None if train_kernels.available() else train_kernels.why_unavailable()
        _log("butterflies: the C training kernels" if why is None else
             f"butterflies: PyTorch ops ({why}; docs/training.md, 'The C training kernels')",
             dist)

    def checkpoint(metrics, path=None, full=True):
        path = path or tc.out
        if not (path and dist.main):
            return
        ck = {"config": model_cfg.to_dict(), "model": model.state_dict(),
              "normalize": {"mean": list(mean), "std": list(std)}, "classes": list(ds.classes),
              "dataset": tc.dataset, "train": asdict(tc), "step": step,
              "epoch": step / steps_per_epoch, "total_steps": total,
              "metrics": {**metrics, "history": history}}
        if full:
            ck.update(optimizer=opt.state_dict(), scheduler=sched.state_dict())
        save_checkpoint(path, ck)

    def log_eval(res):
        res = {"step": step, "epoch": round(step / steps_per_epoch, 3), **res}
        history.append({k: v for k, v in res.items() if k in
                        ("step", "epoch", "test_acc", "test_loss", "agreement", "train_loss")})
        if dist.main:
            msg = f"step {step} epoch {res['epoch']}: test acc {res['test_acc']:.4f}"
            if "agreement" in res:
                u = res["utilisation"]
                msg += (f", neighbour agreement {res['agreement']:.3f}, effective experts "
                        f"{u['mean_effective_experts_frac']:.2f}, used {u['mean_used_experts_frac']:.2f}")
            print(msg, file=sys.stderr, flush=True)
            if tc.log:
                with open(tc.log, "a") as f:
                    f.write(json.dumps(res) + "\n")
        return res

    bar = None
    if tc.progress and dist.main:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, dynamic_ncols=True, desc="train")
    ema = {}
    perm_epoch, perm = -1, None
    t0, last, start_step = time.time(), {}, step
    model.train()
    while step < total:
        epoch, pos = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:
            perm, perm_epoch = epoch_permutation(tc.seed, epoch, len(train_split)), epoch
        gidx = perm[pos * tc.batch_size:(pos + 1) * tc.batch_size]
        lidx = gidx[dist.rank * local_bs:(dist.rank + 1) * local_bs]
        torch.manual_seed(step_seed(tc.seed, step, dist.rank))
        xb = train_split.images[lidx]
        if tc.augment:
            xb = augment(xb, pad, flip)
        x = normalize(xb, mean, std).to(dist.device)
        y = train_split.labels[lidx].to(dist.device)
        logits, aux = ddp(x, return_aux=True)
        ce = F.cross_entropy(logits, y, label_smoothing=tc.label_smoothing)
        loss = ce + tc.balance_weight * aux["balance"] + tc.smooth_weight * aux["smooth"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.clip:
            nn.utils.clip_grad_norm_(model.parameters(), tc.clip)
        opt.step()
        sched.step()
        step += 1

        acc = (logits.argmax(-1) == y).float().mean().item()
        vals = {"loss": ce.item(), "acc": acc}
        if aux["counts"] is not None:
            vals["util"] = routing_stats(aux["counts"].cpu())["mean_effective_experts_frac"]
            vals["smooth"] = aux["smooth"].item()
        for k, v in vals.items():
            ema[k] = v if k not in ema else 0.98 * ema[k] + 0.02 * v
        if bar is not None:
            bar.update(1)
            if step % 5 == 0 or step == total:
                bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items()}
                                | {"lr": f"{sched.get_last_lr()[0]:.1e}"}, refresh=False)
        end_of_epoch = step % steps_per_epoch == 0
        if bar is None and end_of_epoch:
            # without a bar (--no-progress, a log file): one plain line an epoch
            per_step = (time.time() - t0) / (step - start_step)
            left = per_step * (total - step)
            eta = (f", about {left / 60:.0f} min left" if left >= 60 else
                   f", {left:.0f} s left" if left else "")
            _log(f"epoch {step // steps_per_epoch}/{total / steps_per_epoch:.3g}: step "
                 f"{step}/{total}, train loss {ema['loss']:.3f}, acc {ema['acc']:.3f}, "
                 f"{per_step:.2f} s/step{eta}", dist)
        if end_of_epoch and tc.eval_every and (step // steps_per_epoch) % tc.eval_every == 0 \
                and step < total:
            last = log_eval({**evaluate(model, ds.test, mean, std, tc.eval_batch_size, dist,
                                        dist.device), "train_loss": ema.get("loss")})
        if step < total and ((tc.save_every and step % tc.save_every == 0) or end_of_epoch):
            checkpoint(last)
        if tc.stop_after and step >= tc.stop_after and step < total:
            checkpoint(last)
            if bar is not None:
                bar.close()
            _log(f"stopped after step {step}/{total}; continue with --resume {tc.out}", dist)
            dist.barrier()
            return {"stopped_at": step, **last}
    if bar is not None:
        bar.close()
    elapsed = time.time() - t0
    final = evaluate_both_routings(model, ds.test, mean, std, tc.eval_batch_size, dist,
                                   dist.device)
    final = log_eval({**final, "train_loss": ema.get("loss"), "train_acc_ema": ema.get("acc"),
                      "train_seconds_this_session": round(elapsed, 1),
                      "parameters": n_params, "steps": total})
    checkpoint(final)
    if tc.export:
        checkpoint(final, tc.export, full=False)
    if tc.metrics_out and dist.main:
        with open(tc.metrics_out, "w") as f:
            json.dump({"config": model_cfg.to_dict(), "train": asdict(tc), **final}, f, indent=1)
    dist.barrier()
    return final
