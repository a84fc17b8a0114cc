"""The training loop, top to bottom in one file.

    config -> data sets -> loose-crop cache -> (augment -> crop -> target) -> model -> loss -> step
           -> each epoch: validate (NME on the validation set), checkpoint (safetensors + JSON), resume

Run it with ``lightmark train configs/default.yaml`` or, on several processes/GPUs,
``torchrun --nproc_per_node N -m lightmark train configs/default.yaml``. The parts it uses:
``data.py`` (crop cache, mixing, sampler), ``losses.py``, ``checkpoints.py``.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from lightmark.core.config import Config, apply_overrides, load_config, validate_config
from lightmark.core.files import clean_stale_temporaries, write_text
from lightmark.data.readers import LandmarkDataset, open_dataset, require_68
from lightmark.models import TorchPredictor, build_model, load_model
from lightmark.training.checkpoints import load_checkpoint, model_meta, save_checkpoint, save_model_set
from lightmark.training.data import CropCache, EpochSampler, TrainSet
from lightmark.training.losses import Teacher, compute_loss, distill_loss


# --------------------------------------------------------------------------------------------
# optimiser and schedule
# --------------------------------------------------------------------------------------------
def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                               weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    raise ValueError(f"unknown optimizer {t.optimizer!r} (sgd or adamw)")


def lr_at(cfg: Config, epoch: int, step_in_run: int, total_steps: int) -> float:
    """Learning rate: the original write-up's step decay per epoch, or cosine per step; optional linear warm-up."""
    t = cfg.train
    if t.schedule == "step":
        lr = t.lr * t.gamma ** sum(epoch >= m for m in t.milestones)
    elif t.schedule == "cosine":
        lr = t.lr * 0.5 * (1 + math.cos(math.pi * min(step_in_run / max(total_steps, 1), 1.0)))
    else:
        raise ValueError(f"unknown schedule {t.schedule!r} (step or cosine)")
    if t.warmup_steps and step_in_run < t.warmup_steps:
        lr *= (step_in_run + 1) / t.warmup_steps
    return lr



# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def validate(cfg: Config, model: torch.nn.Module, val_set: LandmarkDataset, split: str) -> dict:
    from lightmark.evaluate import evaluate

    model.eval()
    predictor = TorchPredictor(model, model_meta(cfg))
    with torch.no_grad():
        report = evaluate(predictor, val_set, split=split, progress=False)
    model.train()
    summary = report["summary"]
    return {k: summary[k] for k in ("n", "nme_box", "nme_io")}


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def expand_conventions(state: dict[str, torch.Tensor], start_conventions: list[str],
                       conventions: list[str], num_points: int) -> dict[str, torch.Tensor]:
    """``state`` of a model with ``start_conventions`` made to fit one with ``conventions``: the
    output tensors (first axis ``num_points`` per convention) are re-stacked by name, a convention
    the start lacks getting a copy of the start's first one (a fine start: the two differ at the
    jaw mostly)."""
    if list(start_conventions) == list(conventions):
        return state
    k0, k1 = num_points * len(start_conventions), num_points * len(conventions)
    out = {}
    for name, t in state.items():
        if t.ndim >= 1 and t.shape[0] == k0 and ".out" in name:
            blocks = [t[i * num_points:(i + 1) * num_points] for i in range(len(start_conventions))]
            t = torch.cat([blocks[start_conventions.index(c)] if c in start_conventions else blocks[0]
                           for c in conventions])
            assert t.shape[0] == k1
        out[name] = t
    return out


def init_parts(model: torch.nn.Module, start: torch.nn.Module, parts: Optional[list[str]],
               where: str) -> None:
    """Copy ``start``'s weights into ``model``: all of them, or only the top-level modules named
    in ``parts``; a part missing from either model or of another shape is a clear error. A start
    with other landmark conventions has its output layer re-stacked (:func:`expand_conventions`)."""
    if not parts:
        state = start.state_dict()
        if hasattr(start, "cfg") and hasattr(model, "cfg"):
            state = expand_conventions(state, start.cfg.conventions, model.cfg.conventions,
                                       model.cfg.num_points)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"train.init_from {where}: its model does not match the config's "
                             f"(set train.init_modules to copy parts only): {str(e)[:300]}") from None
        return
    for name in parts:
        dst, src = getattr(model, name, None), getattr(start, name, None)
        if not isinstance(dst, torch.nn.Module) or not isinstance(src, torch.nn.Module):
            raise ValueError(f"train.init_modules: {name!r} is not a part of both models "
                             f"(parts: {[n for n, _ in model.named_children()]})")
        try:
            dst.load_state_dict(src.state_dict())
        except RuntimeError as e:
            raise ValueError(f"train.init_modules: {name!r} of {where} does not match the "
                             f"config's: {str(e)[:300]}") from None


def train(cfg: Config, resume: Optional[str] = None, skip_bad: bool = False,
          log: Callable[[str], None] = print) -> dict:
    """Train ``cfg`` and return the final state (history, best validation NME, output paths)."""
    t = cfg.train
    validate_config(cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
                          if torch.cuda.is_available() else "cpu")
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
    is_main = rank == 0
    say = log if is_main else (lambda _msg: None)
    out = Path(cfg.out_dir)
    if is_main and out.is_dir():
        clean_stale_temporaries(out)  # left by a run killed mid-write
    # The teacher is checked before minutes of data caching.
    teacher = Teacher(cfg, device) if t.teacher else None
    if teacher:
        say(f"distilling from {t.teacher} (teacher weight {t.teacher_weight})")

    # data
    if not cfg.train_data:
        raise ValueError(f"config {cfg.name!r} has no train_data")
    t0 = time.time()
    caches, weights = [], []
    for src in cfg.train_data:
        ds = require_68(open_dataset(src.path, kind=src.kind, skip_bad=skip_bad, limit=src.limit,
                                     seed=t.seed), "training")
        cache = CropCache(ds, cfg.model.input_size, cfg.crop_scale, skip_bad, say, src.convention)
        if cache.convention not in cfg.model.conventions:
            raise ValueError(f"train_data {src.path}: its labels are {cache.convention!r} landmarks, "
                             f"which model.conventions {cfg.model.conventions} does not output")
        caches.append(cache)
        weights.append(src.weight)
        say(f"data {src.path}: {len(cache)} samples ({cache.convention}), weight {src.weight}")
    say(f"cached {sum(len(c) for c in caches)} crops in {time.time() - t0:.0f}s")
    train_set = TrainSet(cfg, caches, weights)
    val_set, val_split = None, "all"
    if cfg.val_data:
        val_set = require_68(open_dataset(cfg.val_data, limit=t.val_limit, seed=t.seed), "validation")
        val_split = t.val_split or ("val" if val_set.kind == "aflw2000" else "all")
    # An epoch is one pass over the mixed data (at least one batch per process), or a fixed count.
    n_draws = (t.steps_per_epoch * t.batch_size * world) if t.steps_per_epoch \
        else max(len(train_set), t.batch_size * world)
    sampler = EpochSampler(train_set, n_draws, rank, world)
    loader = torch.utils.data.DataLoader(train_set, batch_size=t.batch_size, sampler=sampler,
                                         num_workers=t.workers, drop_last=True,
                                         persistent_workers=False)

    # model and optimiser
    model = build_model(cfg.model).to(device)
    if t.init_from and not resume:
        start, _ = load_model(t.init_from)  # checks the checksum
        init_parts(model, start, t.init_modules, t.init_from)
        say(f"initialised {', '.join(t.init_modules) if t.init_modules else 'the model'} from {t.init_from}")
    opt = make_optimizer(cfg, model)
    state = {"epoch": 0, "step": 0, "history": [], "best_nme_io": None}
    if resume:
        state = load_checkpoint(Path(resume), model, opt)
        state.pop("param_groups", None), state.pop("config", None), state.pop("model_sha256", None)
        say(f"resumed from {resume} at epoch {state['epoch']}")
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"config {cfg.name!r}: an epoch has no full batch ({n_draws} draws, "
                         f"batch_size {t.batch_size}, {world} process(es))")
    total_steps = steps_per_epoch * t.epochs
    run_start = time.time()

    from tqdm import tqdm

    for epoch in range(state["epoch"], t.epochs):
        train_set.set_epoch(epoch)
        net.train()
        t_epoch, losses, n_images = time.time(), [], 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t.epochs}", disable=not is_main,
                   mininterval=10 if not os.isatty(2) else 0.1, leave=False)
        for x, target, output_set in bar:
            lr = lr_at(cfg, epoch, state["step"], total_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            x, target = x.to(device), target.to(device)
            if teacher:
                loss = distill_loss(cfg, net(x), target, teacher.points(x), teacher.weight)
            else:
                loss = compute_loss(cfg, net(x), target, output_set)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, "
                                         f"step {state['step']} (lower the learning rate?)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            losses.append(loss.item())
            n_images += len(x) * world
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{lr:.2e}", refresh=False)
        seconds = time.time() - t_epoch
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": lr,
               "seconds": round(seconds, 1), "images_per_s": round(n_images / seconds, 1)}
        if is_main and val_set is not None:
            row.update(validate(cfg, model, val_set, val_split))
        state["history"].append(row)
        state["epoch"] = epoch + 1
        say(json.dumps(row))
        if is_main:
            # best before last, and last recording the new best: a run killed between the two
            # resumes from the previous epoch and redoes both, so best is never a stale choice.
            nme = row.get("nme_io")
            if nme is not None and (state["best_nme_io"] is None or nme < state["best_nme_io"]):
                state["best_nme_io"] = nme
                save_model_set(out, "best", model,
                               model_meta(cfg, epoch=epoch + 1, history=state["history"]))
            save_checkpoint(out, "last", model, opt, cfg, state)
            write_text(out / "history.json", json.dumps(state["history"], indent=1))
        if t.max_minutes and (time.time() - run_start) / 60 > t.max_minutes:
            say(f"stopping after {state['epoch']} epochs: max_minutes={t.max_minutes} reached")
            break
    if world > 1:
        torch.distributed.destroy_process_group()
    return dict(state, out_dir=str(out))


def run_from_args(args: Any) -> int:
    """`lightmark train`: the arguments parsed by :mod:`lightmark.cli`."""
    cfg = apply_overrides(load_config(args.config), args.overrides)
    if args.out:
        cfg = replace(cfg, out_dir=args.out)
    state = train(cfg, resume=args.resume, skip_bad=args.skip_bad)
    print(json.dumps({"out_dir": state["out_dir"], "best_nme_io": state["best_nme_io"],
                      "epochs": state["epoch"]}))
    return 0
