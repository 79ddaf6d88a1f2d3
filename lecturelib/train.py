"""Small training utilities shared by the notebooks and ``scripts/train_weights.py``.

``fit`` is a plain training loop (no callbacks, no magic): for each batch ``(inputs, targets)`` of the
loader it computes ``loss_fn(model(inputs), targets)``, back-propagates and steps the optimizer and the
learning-rate schedule. Weights are saved with their metadata (training command, seed, scores) so a
notebook can say where a pretrained model came from.

Nothing here changes global settings such as ``torch.set_num_threads``.
"""
from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._validate import describe, require_callable, require_float, require_int, require_module

__all__ = [
    "default_device",
    "seed_everything",
    "to_device",
    "fit",
    "shuffled_loader",
    "save_weights",
    "load_weights",
    "read_metadata",
    "load_pretrained_model",
    "eval_mode",
    "one_thread",
    "WEIGHTS_DIR",
    "OPTIMIZERS",
    "SCHEDULES",
]

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")


def default_device() -> torch.device:
    """``cuda`` if a GPU is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global random generators (weight init, dropout, shuffling)."""
    seed = require_int("seed", seed, minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch, device):
    """Move tensors to ``device``, also inside (nested) lists, tuples and dicts."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def _make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def _make_schedule(name: str, optimizer, lr: float, total_steps: int):
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def shuffled_loader(dataset, batch_size: int, seed: int, collate_fn: Callable | None = None):
    """The training loader of every recipe: shuffled by its own generator seeded with ``seed`` (the same batches on
    every run, whatever else drew random numbers), the last incomplete batch dropped when there is more than one
    batch (a batch of 1 breaks BatchNorm)."""
    batch_size = require_int("batch_size", batch_size, minimum=1)
    seed = require_int("seed", seed, minimum=0)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                       drop_last=len(dataset) > batch_size, collate_fn=collate_fn,
                                       generator=torch.Generator().manual_seed(seed))


def fit(model: nn.Module, loader, loss_fn: Callable, *, epochs: int, lr: float,
        optimizer: str = "adamw", schedule: str = "onecycle", weight_decay: float = 1e-4,
        grad_clip: float | None = None, device=None, progress: bool = True,
        log_every: int | None = None) -> list[float]:
    """Train ``model`` and return the mean training loss of each epoch.

    loader:    yields ``(inputs, targets)``; targets may be tensors or lists/dicts of tensors
    loss_fn:   ``loss_fn(model(inputs), targets) -> scalar tensor``
    epochs:    passes over the loader
    lr:        learning rate (the peak rate for "onecycle")
    optimizer: "adamw", "adam" or "sgd" (momentum 0.9)
    schedule:  "onecycle" (warm up then anneal; robust for short runs), "cosine" or "constant"
    grad_clip: if given, clip the gradient norm to this value
    device:    defaults to the model's device
    progress:  show a tqdm progress bar; ``progress=False`` prints nothing (unless ``log_every``)
    log_every: also print the running loss every ``log_every`` steps
    The model is left in train mode; call ``model.eval()`` before predicting.
    """
    require_module("model", model)
    require_callable("loss_fn", loss_fn)
    epochs = require_int("epochs", epochs, minimum=1)
    lr = require_float("lr", lr, minimum=0)
    weight_decay = require_float("weight_decay", weight_decay, minimum=0)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if grad_clip is not None:
        grad_clip = require_float("grad_clip", grad_clip, minimum=0)
    if log_every is not None:
        log_every = require_int("log_every", log_every, minimum=1)
    try:
        steps_per_epoch = len(loader)
    except TypeError:
        raise TypeError(f"loader must have a length (e.g. a DataLoader), got {describe(loader)}") from None
    if steps_per_epoch == 0:
        raise ValueError("loader must yield at least one batch")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")

    opt = _make_optimizer(optimizer, model.parameters(), lr, weight_decay)
    sched = _make_schedule(schedule, opt, lr, epochs * steps_per_epoch)
    bar = _progress_bar(epochs * steps_per_epoch, progress)
    epoch_losses = []
    model.train()
    step = 0
    for epoch in range(epochs):
        total, count = 0.0, 0
        for inputs, targets in loader:
            inputs, targets = to_device(inputs, device), to_device(targets, device)
            loss = loss_fn(model(inputs), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.item()
            count += 1
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{total / count:.4f}")
            if log_every is not None and step % log_every == 0:
                _print(bar, f"epoch {epoch + 1} step {step}: loss {total / count:.4f}")
        epoch_losses.append(total / count)
    if bar is not None:
        bar.close()
    return epoch_losses


def _progress_bar(total: int, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="batch", leave=True)


def _print(bar, message: str) -> None:
    if bar is not None:
        bar.write(message)
    else:
        print(message)


# --------------------------------------------------------------------------------------------
# Weights files
# --------------------------------------------------------------------------------------------

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@contextlib.contextmanager
def one_thread():
    """Run tiny per-image tensor operations (anchor labelling, matching) on one thread: waking a thread pool
    costs more than they do, and on a busy machine far more (10x measured on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run the block with ``model`` in eval mode (BatchNorm uses its running statistics, no dropout).

    Afterwards, also on error, every submodule gets its own mode back: ``model.train(was_training)`` would
    put a BatchNorm that the caller froze in eval mode inside a training model back into training.
    """
    modes = [(module, module.training) for module in require_module("model", model).modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def load_pretrained_model(name: str, architectures: dict[str, Callable[..., nn.Module]], script: str) -> nn.Module:
    """The shipped model ``name`` in eval mode on the CPU, as each topic's ``load_pretrained`` returns it.

    Built by ``architectures[name]`` with the constructor config saved beside the weights in
    ``lecturelib/weights/<name>.pt``; ``model.metadata`` holds how they were made (command, seed,
    scores...). ``script`` is the command that recreates a missing file.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {tuple(architectures)}, got {describe(name)}")
    if name not in architectures:
        raise ValueError(f"name must be one of {tuple(architectures)}, got {name!r}")
    path = WEIGHTS_DIR / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; create it with `{script}`")
    model = architectures[name](**read_metadata(path).get("config", {}))
    model.metadata = load_weights(model, path)
    return model.eval()


def save_weights(model: nn.Module, path, **metadata) -> None:
    """Save ``model``'s state_dict with metadata (command, seed, scores...) to ``path``.

    Metadata values must be plain Python data (str, int, float, bool, None, lists/dicts of these) so
    the file loads with ``torch.load(weights_only=True)``. The model's class name and, if it has one,
    its ``config`` dict (constructor arguments) are stored too.
    """
    require_module("model", model)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path, got {describe(path)}")
    meta = {"architecture": type(model).__name__, "config": dict(getattr(model, "config", {}) or {})}
    meta.update(metadata)
    meta = _plain("metadata", meta)
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    torch.save({"state_dict": state, "metadata": meta}, path)


def _plain(name: str, value):
    """A copy of ``value`` made of built-in types only (str subclasses such as torch.__version__
    become str), or TypeError naming the offending entry."""
    if value is None or isinstance(value, bool):
        return value
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (list, tuple)):
        return [_plain(f"{name}[{i}]", item) for i, item in enumerate(value)]
    if isinstance(value, dict):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{name} keys must be str, got {describe(key)}")
            plain[str(key)] = _plain(f"{name}[{key!r}]", item)
        return plain
    raise TypeError(f"{name} must be plain data (str, int, float, bool, None, list, dict), "
                    f"got {describe(value)}")


def _read(path) -> dict:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path, got {describe(path)}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weights file at {os.fspath(path)!r}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ValueError(f"{os.fspath(path)!r} is not a weights file written by save_weights")
    return saved


def read_metadata(path) -> dict:
    """The metadata stored by ``save_weights`` (architecture, config, command, seed, scores...)."""
    return _read(path).get("metadata", {})


def load_weights(model: nn.Module, path) -> dict:
    """Load weights saved by ``save_weights`` into ``model`` (in place) and return their metadata.

    Raises ValueError naming the differences if the file was saved from another architecture
    (other class, missing or unexpected parameters, or parameters of another shape).
    """
    require_module("model", model)
    saved = _read(path)
    state, meta = saved["state_dict"], saved.get("metadata", {})
    problems = _state_mismatch(model.state_dict(), state)
    saved_arch = meta.get("architecture")
    if problems:
        where = f" (saved from {saved_arch} {meta.get('config', {})})" if saved_arch else ""
        raise ValueError(f"weights in {os.fspath(path)!r}{where} do not fit {type(model).__name__}: "
                         + "; ".join(problems))
    model.load_state_dict(state)
    return meta


def _state_mismatch(expected: dict, saved: dict, limit: int = 5) -> list[str]:
    """Readable differences between two state dicts (names and shapes)."""
    problems = []
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    wrong_shape = [f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)} expected"
                   for k, v in expected.items() if k in saved and saved[k].shape != v.shape]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong_shape)):
        if items:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            problems.append(f"{title}: {', '.join(items[:limit])}{more}")
    return problems
