"""The one training loop (chapter 1). Every method runs through :func:`train`.

It owns what every run needs -- data on the device, the model and optimiser,
per-epoch evaluation, gradient diagnostics, checkpoints, non-finite losses --
and calls the method's hooks (:mod:`mmlab.methods.base`) for everything a
method may change.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from ..config import RunConfig
from ..data.registry import get_dataset
from ..errors import NonFiniteLossError, TimeLimitReached
from ..methods import Method, TrainState, build_method
from ..metrics import accuracy, cosine, global_norm, macro_f1
from ..models import ModelOutput, MultimodalClassifier, ParameterGroups, build_model
from .batches import ResidentBatches
from .checkpoint import load_checkpoint, save_checkpoint
from .device import describe_device, pick_device

#: evaluation batch size per device type: large batches keep a GPU busy; on a CPU a batch that
#: fits the caches is faster per sample (128 runs CG-MNIST's forward pass about 1.5x faster than 1000)
EVAL_BATCH = {"cuda": 1000, "cpu": 128}


def eval_batch_size(device: torch.device) -> int:
    return EVAL_BATCH.get(device.type, 1000)


# -- gradients of several losses w.r.t. one encoder, from one forward pass -------------
def per_loss_encoder_gradients(
    output: ModelOutput, losses: dict[str, torch.Tensor], groups: ParameterGroups
) -> dict[str, dict[str, list[torch.Tensor]]]:
    """``grads[m][loss]`` = gradient of ``loss`` w.r.t. the parameters of encoder ``m``.

    Each loss is first differentiated w.r.t. the features ``z^m`` (cheap: only the
    heads lie in between); then one vector-Jacobian product per (loss, encoder)
    carries it through the encoder. Losses that do not reach ``z^m`` are absent.
    The graph is kept, so ``backward`` can still follow.
    """
    if groups.cross_modal:  # encoder m also reaches the other features (MMTM): differentiate directly
        return _per_loss_gradients_direct(losses, groups)
    modalities = list(groups.encoders)
    features = [output.features[m] for m in modalities]
    grads: dict[str, dict[str, list[torch.Tensor]]] = {m: {} for m in modalities}
    for name, loss in losses.items():
        d_features = torch.autograd.grad(loss, features, retain_graph=True, allow_unused=True)
        for m, dz in zip(modalities, d_features):
            if dz is None:
                continue
            params = groups.encoders[m]
            g = torch.autograd.grad(output.features[m], params, grad_outputs=dz,
                                    retain_graph=True, allow_unused=True)
            grads[m][name] = [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g)]
    return grads


def _per_loss_gradients_direct(losses: dict[str, torch.Tensor], groups: ParameterGroups
                               ) -> dict[str, dict[str, list[torch.Tensor]]]:
    """As :func:`per_loss_encoder_gradients`, by one backward pass per loss to every encoder."""
    modalities = list(groups.encoders)
    params = [p for m in modalities for p in groups.encoders[m]]
    sizes = [len(groups.encoders[m]) for m in modalities]
    grads: dict[str, dict[str, list[torch.Tensor]]] = {m: {} for m in modalities}
    for name, loss in losses.items():
        g_all = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        start = 0
        for m, size in zip(modalities, sizes):
            g = g_all[start:start + size]
            start += size
            if any(gi is not None for gi in g):
                grads[m][name] = [torch.zeros_like(p) if gi is None else gi
                                  for p, gi in zip(groups.encoders[m], g)]
    return grads


class _EpochLog:
    """Averages logged values over an epoch without a device sync (or even a
    kernel launch) per step: tensors are kept and reduced once, at the epoch's end."""

    def __init__(self):
        self.values: dict[str, list] = defaultdict(list)

    def reset(self) -> None:
        self.values.clear()

    def __call__(self, name: str, value: Any) -> None:
        self.values[name].append(value.detach() if isinstance(value, torch.Tensor) else float(value))

    def means(self) -> dict[str, float]:
        out = {}
        for name, values in self.values.items():
            if isinstance(values[0], torch.Tensor):
                out[name] = torch.stack(values).double().mean().item()
            else:
                out[name] = sum(values) / len(values)
        return out


@torch.no_grad()
def evaluate(model: MultimodalClassifier, batches: ResidentBatches, num_classes: int,
             prefix: str) -> dict[str, float]:
    """Fused accuracy and macro-F1, and each modality's accuracy: from its
    unimodal head when the model has one, else from its share ``s^m`` of the
    fused logits (``share_acc`` is logged for every model)."""
    was_training = model.training
    model.eval()
    preds, share_preds, head_preds, labels_all = [], defaultdict(list), defaultdict(list), []
    loss_sum = 0.0
    for inputs, labels in batches.epoch():
        out = model(inputs)
        loss_sum += torch.nn.functional.cross_entropy(out.logits, labels, reduction="sum")
        preds.append(out.logits.argmax(1))
        for m, s in out.shares.items():
            share_preds[m].append(s.argmax(1))
        for m, h in out.unimodal_logits.items():
            head_preds[m].append(h.argmax(1))
        labels_all.append(labels)
    model.train(was_training)
    y = torch.cat(labels_all)
    p = torch.cat(preds)
    metrics = {
        f"{prefix}/acc": accuracy(p, y),
        f"{prefix}/f1": macro_f1(p, y, num_classes),
        f"{prefix}/loss": float(loss_sum) / len(y),
    }
    for m in model.modalities:
        share_acc = accuracy(torch.cat(share_preds[m]), y)
        metrics[f"{prefix}/share_acc/{m}"] = share_acc
        if m in head_preds:
            metrics[f"{prefix}/acc/{m}"] = accuracy(torch.cat(head_preds[m]), y)
        elif len(model.modalities) == 1:
            metrics[f"{prefix}/acc/{m}"] = metrics[f"{prefix}/acc"]
        else:
            metrics[f"{prefix}/acc/{m}"] = share_acc
    return metrics


def default_checkpoint_dir() -> Path:
    env = os.environ.get("MMLAB_CHECKPOINTS")
    if env:
        return Path(env)
    from ..results import default_results_root

    return default_results_root() / ".checkpoints"


def train(
    config: RunConfig,
    *,
    method: Method | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    data_root: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Callable[[int, dict], None]] = (),
    deadline: float | None = None,
) -> dict[str, Any]:
    """Train one run and return its record (see :mod:`mmlab.results`).

    A checkpoint is written atomically after every epoch; if one for this
    config exists, the run resumes from it and reaches the same result as an
    uninterrupted run. A NaN or infinite loss raises
    :class:`~mmlab.errors.NonFiniteLossError` and leaves the last good
    checkpoint in place. ``callbacks(epoch, metrics)`` run after each
    checkpoint. ``deadline`` (a :func:`time.time` value): no epoch is started that, by the last
    one's duration, would end after it; the run then raises
    :class:`~mmlab.errors.TimeLimitReached` with its checkpoint on disk, to resume later.
    """
    from tqdm.auto import tqdm

    from ..provenance import git_commit

    config.validate()
    code_version = git_commit()  # the code this process imported, before the checkout can move on
    spec = get_dataset(config.dataset)
    method = method or build_method(config.method, list(spec.modalities), **config.method_options)
    device = pick_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fastest convolutions; GPU runs are not bit-reproducible
    modalities = method.modalities(list(spec.modalities))

    splits = spec.load_splits(
        train_size=config.train_size, val_size=config.val_size, test_size=config.test_size,
        data_seed=config.data_seed, options=config.dataset_options, root=data_root,
    )
    train_batches = ResidentBatches(splits["train"], modalities, config.batch_size, device,
                                    shuffle=True, seed=config.seed,
                                    transform=spec.batch_transform(config.dataset_options))
    eval_batches = {s: ResidentBatches(splits[s], modalities, eval_batch_size(device), device)
                    for s in ("val", "test")}

    torch.manual_seed(config.seed)
    model = build_model(spec, modalities, method.needs_unimodal_heads, fusion=method.fusion).to(device)
    if spec.channels_last:
        model.use_channels_last()  # same parameters, NHWC strides
    groups = model.parameter_groups()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed + 7919)
    log = _EpochLog()
    state = TrainState(model=model, groups=groups, optimizer=optimizer, device=device,
                       num_epochs=config.epochs, steps_per_epoch=len(train_batches),
                       generator=generator, logger=log)
    method.setup(state)

    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir()
    checkpoint_path = checkpoint_dir / f"{config.key}.pt"
    history: list[dict[str, Any]] = []
    start_epoch, wall_before, resumed, earlier_commits = 0, 0.0, False, []
    last_epoch_s = 0.0  # the duration of the last epoch, checkpoint included (for ``deadline``)
    if checkpoint_path.exists():
        ckpt = load_checkpoint(checkpoint_path, map_location=device)
        if ckpt.get("config_key") != config.key:
            raise RuntimeError(f"Checkpoint {checkpoint_path} belongs to another config; delete it.")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        method.load_state_dict(ckpt["method"])
        generator.set_state(ckpt["generator"].cpu())
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        history, start_epoch, state.step = ckpt["history"], ckpt["epochs_done"], ckpt["step"]
        wall_before, resumed = ckpt["wall_time_s"], True
        earlier_commits = ckpt.get("git_commits", [])
        last_epoch_s = ckpt.get("last_epoch_s", 0.0)

    def run_eval(split: str) -> dict[str, float]:
        return evaluate(model, eval_batches[split], spec.num_classes, split)

    measure = config.measure_imbalance  # the greedy-learner measures (chapter 2), if asked for
    if measure:
        from ..imbalance import imbalance_metrics, log_learning_speeds, probe_batches

        probes = {s: probe_batches(splits[s], modalities, device, batch_size=eval_batch_size(device))
                  for s in ("train", "val")}

    # bf16 autocast (no loss scaling needed: bfloat16 has float32's exponent range)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    probe_every = config.grad_probe_every
    check_every = 1 if device.type == "cpu" else 25
    t_start = time.perf_counter()
    epochs = tqdm(range(start_epoch, config.epochs), desc=config.label, disable=not progress,
                  initial=start_epoch, total=config.epochs, unit="epoch")
    for epoch in epochs:
        if deadline is not None and time.time() + last_epoch_s > deadline:
            epochs.close()
            raise _time_limit(config, epoch, checkpoint_path)
        state.epoch = epoch
        model.train()
        method.on_epoch_start(state)
        log.reset()
        correct = torch.zeros((), device=device)
        seen = 0
        t_epoch = time.perf_counter()
        wall_epoch = time.time()
        steps = tqdm(train_batches.epoch(epoch), total=len(train_batches), leave=False,
                     disable=not progress, desc=f"epoch {epoch + 1}", unit="batch")
        for inputs, labels in steps:
            state.labels = labels
            with autocast:
                output = model(inputs, intervene=lambda f: method.intervene(f, state))
                losses = method.losses(output, labels, state)
                total = method.total_loss(losses, state)
            if (state.step % check_every == 0) and not torch.isfinite(total):
                _raise_non_finite(losses, epoch, state.step, checkpoint_path)
            optimizer.zero_grad(set_to_none=True)
            probe = probe_every and state.step % probe_every == 0
            if method.per_loss_gradients or probe:
                grads = per_loss_encoder_gradients(output, losses, groups)
                if probe:
                    _log_gradient_probe(grads, log)
            if method.per_loss_gradients:
                _apply_combined_gradients(method, state, grads, total, groups)
            else:
                total.backward()
            method.transform_gradients(output, labels, state)
            if measure:
                log_learning_speeds(groups, log)
            for m, params in groups.encoders.items():
                log(f"train/grad_norm/{m}", global_norm([p.grad for p in params]))
            optimizer.step()
            state.step += 1
            method.on_step_end(state)
            log("train/loss", total)
            for name, value in losses.items():
                log(f"train/loss/{name}", value)
            correct += (output.logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
        epoch_log = log.means()  # converting to floats waits for the device: the epoch is done
        train_seconds = time.perf_counter() - t_epoch
        if not math.isfinite(epoch_log.get("train/loss", 0.0)):
            _raise_non_finite(losses, epoch, state.step, checkpoint_path)
        metrics: dict[str, Any] = {"epoch": epoch + 1, "step": state.step,
                                   "train/acc": float(correct) / max(seen, 1), **epoch_log,
                                   "time/train_s": train_seconds}
        metrics.update(run_eval("val"))
        metrics.update(run_eval("test"))
        if measure:
            metrics.update(imbalance_metrics(model, probes))
        metrics.update(method.on_epoch_end(state, run_eval) or {})
        history.append(metrics)
        save_checkpoint(checkpoint_path, {
            "config_key": config.key, "config": config.to_dict(), "epochs_done": epoch + 1,
            "step": state.step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "method": method.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(), "history": history,
            "wall_time_s": wall_before + time.perf_counter() - t_start,
            "git_commits": earlier_commits + [code_version[0]],
            "last_epoch_s": time.time() - wall_epoch,
        })
        epochs.set_postfix({"test acc": f"{metrics['test/acc']:.3f}"})
        for callback in callbacks:
            callback(epoch, metrics)
        last_epoch_s = time.time() - wall_epoch

    wall = wall_before + time.perf_counter() - t_start
    from ..provenance import provenance
    from ..results import make_record

    return make_record(
        config, history, splits,
        provenance(device=describe_device(device), wall_time_s=wall, resumed=resumed,
                   code_version=code_version, earlier_commits=earlier_commits),
        checkpoint_path=checkpoint_path,
    )


def _log_gradient_probe(grads: dict[str, dict[str, list[torch.Tensor]]], log: _EpochLog) -> None:
    """cos(g_m, g_u) and the two norms, per encoder, where both gradients exist."""
    for m, by_loss in grads.items():
        g_mm, g_uni = by_loss.get("multimodal"), by_loss.get(f"unimodal/{m}")
        if g_mm is not None:
            log(f"train/grad_norm_mm/{m}", global_norm(g_mm))
        if g_uni is not None:
            log(f"train/grad_norm_uni/{m}", global_norm(g_uni))
        if g_mm is not None and g_uni is not None:
            c = cosine(g_mm, g_uni)
            log(f"train/cos_mm_uni/{m}", c)
            log(f"train/conflict/{m}", (c < 0).float())


def _apply_combined_gradients(method: Method, state: TrainState, grads, total: torch.Tensor,
                              groups: ParameterGroups) -> None:
    non_encoder = [p for p in groups.non_encoder() if p.requires_grad]
    if non_encoder:
        for p, g in zip(non_encoder, torch.autograd.grad(total, non_encoder, allow_unused=True)):
            p.grad = None if g is None else g
    for m, params in groups.encoders.items():
        if grads[m]:
            for p, g in zip(params, method.combine_encoder_gradients(m, grads[m], state)):
                p.grad = g


def _time_limit(config: RunConfig, epoch: int, checkpoint_path: Path) -> TimeLimitReached:
    kept = (f"its checkpoint {checkpoint_path} is kept: run it again to resume"
            if epoch else "no epoch was trained")
    return TimeLimitReached(f"time limit: {config.label} seed {config.seed} stopped before epoch {epoch + 1} "
                            f"of {config.epochs}; {kept}", epochs_done=epoch)


def _raise_non_finite(losses: dict[str, torch.Tensor], epoch: int, step: int, checkpoint_path: Path):
    terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
    kept = (f"The last good checkpoint (end of epoch {epoch}) is kept at {checkpoint_path}."
            if checkpoint_path.exists() else "No epoch had finished, so there is no checkpoint.")
    raise NonFiniteLossError(
        f"Non-finite training loss in epoch {epoch + 1} (by step {step}): {terms}. {kept} "
        "Lower the learning rate, or check the inputs for NaN, then run again to resume."
    )
