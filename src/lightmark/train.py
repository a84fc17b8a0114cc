"""The training loop, top to bottom in one file.

    config -> data sets -> loose-crop cache -> (augment -> crop -> target) -> model -> loss -> step
           -> each epoch: validate (NME on the validation set), checkpoint (safetensors + JSON), resume

Run it with ``lightmark train configs/default.yaml`` or, on several processes/GPUs,
``torchrun --nproc_per_node N -m lightmark.train configs/default.yaml``.
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
import torch.nn.functional as F

from . import geometry, heatmap
from .config import Config, load_config, to_dict
from .data import augment
from .data.readers import DataError, LandmarkDataset, open_dataset
from .files import atomic_path, sha256, write_text
from .imaging import ImageError, to_input
from .modelfile import model_paths
from .models import TorchPredictor, build_model, load_model, save_model
from .models.heads import heatmap_to_crop, soft_argmax

# The cache keeps a crop this many times larger than the training crop, so that rotation, scale and
# shift augmentation still find real pixels around the face.
LOOSE = 1.5


# --------------------------------------------------------------------------------------------
# data: every sample is cropped once, loosely, into memory; augmentation re-crops from there
# --------------------------------------------------------------------------------------------
class CropCache:
    """Loose crops (N, L, L, 3) uint8 and their points (N, 68, 2), built once per run.

    Decoding a JPEG costs more than a training step's augmentation on these CPUs, and the loose crop
    is a similarity image of the original, so cropping from it equals cropping from the photo.
    """

    def __init__(self, dataset: LandmarkDataset, input_size: int, crop_scale: float,
                 skip_bad: bool = False, log: Callable[[str], None] = print):
        self.loose_size = int(math.ceil(input_size * LOOSE))
        n = len(dataset)
        self.images = np.zeros((n, self.loose_size, self.loose_size, 3), np.uint8)
        self.points = np.zeros((n, 68, 2), np.float32)
        keep = np.ones(n, bool)
        self.bad: list[tuple[str, str]] = list(getattr(dataset, "bad", []))
        for i, rec in enumerate(dataset.records):
            try:
                image = dataset[i].image
            except (DataError, ImageError) as e:
                if not skip_bad:
                    raise
                self.bad.append((str(rec.image_path), str(e)))
                keep[i] = False
                continue
            centre, side = geometry.square_from_box(geometry.landmark_box(rec.points),
                                                    crop_scale * LOOSE)
            m = geometry.crop_matrix(centre, side, self.loose_size)
            self.images[i] = geometry.warp_image(image, m, self.loose_size)
            self.points[i] = geometry.apply_affine(rec.points, m)
        self.images, self.points = self.images[keep], self.points[keep]
        if self.bad:
            log(f"{dataset.name}: skipped {len(self.bad)} bad sample(s), e.g. {self.bad[0]}")

    def __len__(self) -> int:
        return len(self.points)


class TrainSet(torch.utils.data.Dataset):
    """Draws augmented crops and targets from several caches mixed by weight."""

    def __init__(self, cfg: Config, caches: list[CropCache], weights: list[float]):
        self.cfg, self.caches = cfg, caches
        self.offsets = np.cumsum([0] + [len(c) for c in caches])
        # Each sample's draw probability: its source's weight shared among the source's samples.
        self.p = np.concatenate([np.full(len(c), w / max(len(c), 1)) for c, w in zip(caches, weights)])
        self.p /= self.p.sum()
        self.epoch = 0
        self.color = augment.ColorAugment(cfg.augment)
        self.hm_size = cfg.model.heatmap_size

    def epoch_indices(self, epoch: int, n_draws: int) -> np.ndarray:
        rng = np.random.default_rng([self.cfg.train.seed, epoch])
        return rng.choice(len(self.p), size=n_draws, replace=True, p=self.p)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.p)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        draw, index = key  # the draw number makes the augmentation of a repeated sample differ
        src = int(np.searchsorted(self.offsets, index, side="right") - 1)
        cache, j = self.caches[src], index - self.offsets[src]
        rng = np.random.default_rng([self.cfg.train.seed, self.epoch, draw])
        params = augment.random_crop(cache.points[j], self.cfg.crop_scale, self.cfg.augment, rng)
        crop, pts = augment.apply_crop(cache.images[j], cache.points[j], params,
                                       self.cfg.model.input_size)
        # Colour draws are keyed to the draw too, so DataLoader workers never repeat each other.
        x = torch.from_numpy(to_input(self.color(crop, seed=int(rng.integers(2**31))))[0])
        if self.cfg.model.head == "heatmap":
            pts_hm = heatmap.crop_to_heatmap(pts, self.cfg.model.input_size, self.hm_size)
            target = heatmap.encode(pts_hm, (self.hm_size, self.hm_size), self.cfg.codec.sigma,
                                    self.cfg.codec.peak)
            return x, torch.from_numpy(np.asarray(target, np.float32))
        return x, torch.from_numpy(pts)


class EpochSampler(torch.utils.data.Sampler):
    """Yields (draw, index) pairs of one epoch; under DDP each rank takes every world-th draw."""

    def __init__(self, dataset: TrainSet, n_draws: int, rank: int = 0, world: int = 1):
        self.dataset, self.n_draws, self.rank, self.world = dataset, n_draws, rank, world

    def __iter__(self):
        idx = self.dataset.epoch_indices(self.dataset.epoch, self.n_draws)
        for draw in range(self.rank, self.n_draws, self.world):
            yield draw, int(idx[draw])

    def __len__(self) -> int:
        return len(range(self.rank, self.n_draws, self.world))


# --------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------
def output_points(head: str, output: torch.Tensor, input_size: int) -> torch.Tensor:
    """A coordinate head's output as (B, 68, 2) crop pixels (soft-argmax for the integral head)."""
    if head == "integral":
        return heatmap_to_crop(soft_argmax(output), input_size, output.shape[-1])
    return output


def compute_loss(cfg: Config, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE on heatmaps (the seed) or L1/MSE on coordinates normalised by the input size."""
    head, s = cfg.model.head, cfg.model.input_size
    if head == "heatmap":
        if cfg.train.loss != "mse":
            raise ValueError(f"the heatmap head trains with loss 'mse', not {cfg.train.loss!r}")
        return F.mse_loss(output, target)
    return point_loss(cfg.train.loss, output_points(head, output, s), target, s)


def point_loss(loss: str, points: torch.Tensor, target: torch.Tensor, input_size: int) -> torch.Tensor:
    """L1 or MSE between point sets, in percent of the input size."""
    if loss == "l1":
        return (points - target).abs().mean() / input_size * 100
    if loss == "mse":
        return ((points - target) / input_size * 100).pow(2).mean()
    raise ValueError(f"unknown loss {loss!r} for a coordinate head")


class Teacher:
    """A trained model whose points on the same augmented crops are a second target (distillation).

    It runs in eval mode without gradients; a teacher that sees crops differently (input size, crop
    scale) or predicts no points (the heatmap head) is refused before any data is cached.
    """

    def __init__(self, cfg: Config, device: torch.device):
        t = cfg.train  # the student's side was checked by check_train_config
        model, meta = load_model(t.teacher)  # checks the checksum
        m = meta["model"]
        if m["head"] == "heatmap":
            raise ValueError(f"train.teacher {t.teacher}: its heatmap head predicts no points "
                             "for distillation")
        if m["input_size"] != cfg.model.input_size or meta.get("crop_scale") != cfg.crop_scale:
            raise ValueError(f"train.teacher {t.teacher}: it sees {m['input_size']} px crops at "
                             f"scale {meta.get('crop_scale')}, the student {cfg.model.input_size} px "
                             f"at {cfg.crop_scale}; they must match")
        self.model = model.to(device).eval().requires_grad_(False)
        self.head, self.input_size, self.weight = m["head"], m["input_size"], t.teacher_weight

    @torch.no_grad()
    def points(self, x: torch.Tensor) -> torch.Tensor:
        return output_points(self.head, self.model(x), self.input_size)


def distill_loss(cfg: Config, output: torch.Tensor, target: torch.Tensor,
                 teacher_points: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) x the loss on the labels + weight x the loss on the teacher's points."""
    s = cfg.model.input_size
    points = output_points(cfg.model.head, output, s)
    return ((1 - weight) * point_loss(cfg.train.loss, points, target, s)
            + weight * point_loss(cfg.train.loss, points, teacher_points, s))


def check_train_config(cfg: Config) -> None:
    """Refuse a head/loss/optimiser/schedule combination before minutes of data caching."""
    t, head = cfg.train, cfg.model.head
    allowed = {"heatmap": ("mse",), "integral": ("l1", "mse"), "regression": ("l1", "mse")}
    if head not in allowed:
        raise ValueError(f"config {cfg.name!r}: unknown head {head!r} ({', '.join(allowed)})")
    if t.loss not in allowed[head]:
        raise ValueError(f"config {cfg.name!r}: the {head} head trains with loss "
                         f"{' or '.join(allowed[head])}, not {t.loss!r}")
    if t.optimizer not in ("sgd", "adamw"):
        raise ValueError(f"config {cfg.name!r}: unknown optimizer {t.optimizer!r} (sgd or adamw)")
    if t.schedule not in ("step", "cosine"):
        raise ValueError(f"config {cfg.name!r}: unknown schedule {t.schedule!r} (step or cosine)")
    if t.teacher and head == "heatmap":
        raise ValueError(f"config {cfg.name!r}: train.teacher needs a coordinate head "
                         "(integral or regression), not the heatmap head")
    if t.teacher and not 0.0 <= t.teacher_weight <= 1.0:
        raise ValueError(f"config {cfg.name!r}: train.teacher_weight must be in [0, 1], "
                         f"not {t.teacher_weight}")


# --------------------------------------------------------------------------------------------
# optimiser, schedule, checkpoints
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
    """Learning rate: the seed's step decay per epoch, or cosine per step; optional linear warm-up."""
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


def model_meta(cfg: Config, **extra: Any) -> dict:
    return {"name": cfg.name, "model": to_dict(cfg.model), "codec": to_dict(cfg.codec),
            "crop_scale": cfg.crop_scale, **extra}


def save_checkpoint(out: Path, tag: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    cfg: Config, state: dict) -> None:
    """``tag.safetensors/.json`` (the model, loadable alone) + ``tag_state.*`` (optimiser, progress).

    The state JSON is written last and names the model's checksum, so a run stopped between the
    two writes is detected at resume instead of silently mixing two epochs.
    """
    from safetensors.torch import save_file

    save_model(model, model_meta(cfg, epoch=state["epoch"], history=state["history"]), out / tag)
    opt_state = opt.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous()
               for i, s in opt_state["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    with atomic_path(out / f"{tag}_state.safetensors") as tmp:
        save_file(tensors, str(tmp))
    state = dict(state, param_groups=opt_state["param_groups"], config=to_dict(cfg),
                 model_sha256=sha256(out / f"{tag}.safetensors"))
    write_text(out / f"{tag}_state.json", json.dumps(state, indent=1))


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Restore model and optimiser from ``path`` (``.../last`` or ``.../last.safetensors``)."""
    from safetensors.torch import load_file

    stem = model_paths(path).stem
    state_json = stem.parent / f"{stem.name}_state.json"
    if not state_json.is_file():
        raise FileNotFoundError(f"{state_json}: no training state beside {stem}.safetensors "
                                f"(resume needs the _state files a training run writes)")
    state = json.loads(state_json.read_text())
    if sha256(f"{stem}.safetensors") != state["model_sha256"]:
        raise ValueError(f"{stem}.safetensors does not match {state_json} (interrupted write?)")
    loaded, _ = load_model(f"{stem}.safetensors")
    model.load_state_dict(loaded.state_dict())
    tensors = load_file(str(stem.parent / f"{stem.name}_state.safetensors"))
    opt_state: dict = {"state": {}, "param_groups": state["param_groups"]}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        opt_state["state"].setdefault(int(i), {})[name] = v
    opt.load_state_dict(opt_state)
    return state


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def validate(cfg: Config, model: torch.nn.Module, val_set: LandmarkDataset, split: str) -> dict:
    from .evaluate import evaluate

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
def init_parts(model: torch.nn.Module, start: torch.nn.Module, parts: Optional[list[str]],
               where: str) -> None:
    """Copy ``start``'s weights into ``model``: all of them, or only the top-level modules named
    in ``parts``; a part missing from either model or of another shape is a clear error."""
    if not parts:
        try:
            model.load_state_dict(start.state_dict())
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
    check_train_config(cfg)
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
        ds = open_dataset(src.path, kind=src.kind, skip_bad=skip_bad, limit=src.limit, seed=t.seed)
        caches.append(CropCache(ds, cfg.model.input_size, cfg.crop_scale, skip_bad, say))
        weights.append(src.weight)
        say(f"data {src.path}: {len(caches[-1])} samples, weight {src.weight}")
    say(f"cached {sum(len(c) for c in caches)} crops in {time.time() - t0:.0f}s")
    train_set = TrainSet(cfg, caches, weights)
    val_set, val_split = None, "all"
    if cfg.val_data:
        val_set = open_dataset(cfg.val_data, limit=t.val_limit, seed=t.seed)
        val_split = "val" if val_set.kind == "aflw2000" else "all"
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
        for x, target in bar:
            lr = lr_at(cfg, epoch, state["step"], total_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            x, target = x.to(device), target.to(device)
            if teacher:
                loss = distill_loss(cfg, net(x), target, teacher.points(x), teacher.weight)
            else:
                loss = compute_loss(cfg, net(x), target)
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
            save_checkpoint(out, "last", model, opt, cfg, state)
            nme = row.get("nme_io")
            if nme is not None and (state["best_nme_io"] is None or nme < state["best_nme_io"]):
                state["best_nme_io"] = nme
                save_model(model, model_meta(cfg, epoch=epoch + 1, history=state["history"]),
                           out / "best")
            write_text(out / "history.json", json.dumps(state["history"], indent=1))
        if t.max_minutes and (time.time() - run_start) / 60 > t.max_minutes:
            say(f"stopping after {state['epoch']} epochs: max_minutes={t.max_minutes} reached")
            break
    if world > 1:
        torch.distributed.destroy_process_group()
    return dict(state, out_dir=str(out))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """``["train.epochs=3", "model.width=1.0"]`` -> a new Config (values parsed as YAML)."""
    import yaml

    from .config import config_from_dict

    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not KEY=VALUE (e.g. train.epochs=3)")
        key, value = item.split("=", 1)
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section of the config")
            node = node[p]
        node[leaf] = yaml.safe_load(value)
    return config_from_dict(data, "config with overrides")


def run_from_args(args: Any) -> int:
    """`lightmark train` / `python -m lightmark.train`: arguments from ``cli.add_train_arguments``."""
    cfg = apply_overrides(load_config(args.config), args.overrides)
    if args.out:
        cfg = replace(cfg, out_dir=args.out)
    state = train(cfg, resume=args.resume, skip_bad=args.skip_bad)
    print(json.dumps({"out_dir": state["out_dir"], "best_nme_io": state["best_nme_io"],
                      "epochs": state["epoch"]}))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point for ``torchrun ... -m lightmark.train CONFIG`` (same arguments as the CLI)."""
    import argparse

    from .cli import add_train_arguments

    parser = argparse.ArgumentParser(prog="lightmark train", description=__doc__.split("\n")[0])
    add_train_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
