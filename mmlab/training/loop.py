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
import warnings
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from ..config import RunConfig
from ..data.registry import get_dataset
from ..errors import NonFiniteLossError, TimeLimitReached, UnknownNameError
from ..methods import Method, TrainState, build_method
from ..metrics import accuracy, cosine, global_norm, macro_f1
from ..models import ModelOutput, MultimodalClassifier, ParameterGroups, build_model
from ..progress import progress_bar
from .batches import ResidentBatches, check_samples
from .checkpoint import load_checkpoint, save_checkpoint
from .device import describe_device, pick_device, wait_for_device
from .graph import CapturedSteps, CudaGraphs, is_capturable

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
    kernel launch) per step: tensors are kept and reduced once, at the epoch's end.
    Steps replayed from a CUDA graph hand in sums instead (:meth:`add_total`)."""

    def __init__(self):
        self.values: dict[str, list] = defaultdict(list)
        self.totals: dict[str, list[tuple[torch.Tensor, int]]] = defaultdict(list)

    def reset(self) -> None:
        self.values.clear()
        self.totals.clear()

    def __call__(self, name: str, value: Any) -> None:
        self.values[name].append(value.detach() if isinstance(value, torch.Tensor) else float(value))

    def add_total(self, name: str, total: torch.Tensor, count: int) -> None:
        """``total``: the sum of ``count`` values of ``name`` (a 0-d tensor), each counted as one logged value."""
        self.totals[name].append((total, count))

    def means(self) -> dict[str, float]:
        out = {}
        for name in {**self.values, **self.totals}:
            values, totals = self.values.get(name, []), self.totals.get(name, [])
            if not totals and isinstance(values[0], torch.Tensor):
                out[name] = torch.stack(values).double().mean().item()
            elif not totals:
                out[name] = sum(values) / len(values)
            else:
                parts = [torch.as_tensor(v, dtype=torch.float64).reshape(()).cpu() for v in values]
                parts += [t.double().cpu() for t, _ in totals]
                out[name] = torch.stack(parts).sum().item() / (len(values) + sum(c for _, c in totals))
        return out


@torch.no_grad()
def evaluate(model: MultimodalClassifier, batches: ResidentBatches, num_classes: int,
             prefix: str, prediction: Callable[[ModelOutput], torch.Tensor] | None = None) -> dict[str, float]:
    """Fused accuracy, macro-F1 and cross-entropy, and each modality's accuracy: from its
    unimodal head when the model has one (with that head's cross-entropy,
    ``loss/unimodal/<m>``), else from its share ``s^m`` of the fused logits
    (``share_acc`` is logged for every model). ``prediction(output)``: the logits the model
    predicts with (a method's :meth:`~mmlab.methods.Method.prediction`; default the fused head's)."""
    was_training = model.training
    model.eval()
    preds, share_preds, head_preds, labels_all = [], defaultdict(list), defaultdict(list), []
    loss_sum = 0.0
    head_loss_sums: dict[str, torch.Tensor] = defaultdict(float)
    for inputs, labels in batches.epoch():
        out = model(inputs)
        logits = out.logits if prediction is None else prediction(out)
        loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        for m, h in out.unimodal_logits.items():
            head_loss_sums[m] += torch.nn.functional.cross_entropy(h, labels, reduction="sum")
        preds.append(logits.argmax(1))
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
            metrics[f"{prefix}/loss/unimodal/{m}"] = float(head_loss_sums[m]) / len(y)
        elif len(model.modalities) == 1:
            metrics[f"{prefix}/acc/{m}"] = metrics[f"{prefix}/acc"]
        else:
            metrics[f"{prefix}/acc/{m}"] = share_acc
    return metrics


@torch.no_grad()
def encode_split(model: MultimodalClassifier, batches: ResidentBatches
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every modality's encoder features of a whole split, in its order (``[N, d]`` each), and its
    labels, with the model in evaluation mode (:attr:`~mmlab.methods.TrainState.features`)."""
    was_training = model.training
    model.eval()
    features, labels = defaultdict(list), []
    for inputs, y in batches.epoch(0):
        for m, z in model.encode(inputs).items():
            features[m].append(z.float())
        labels.append(y)
    model.train(was_training)
    return {m: torch.cat(z) for m, z in features.items()}, torch.cat(labels)


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
    cuda_graph: bool | Any = False,
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
    ``cuda_graph=True`` (a CUDA device): replay the method's full-batch steps from a CUDA graph
    captured once, if the method is capturable (:mod:`mmlab.training.graph`; others train eagerly,
    and the record's provenance says which it was). Tests pass an
    :class:`~mmlab.training.graph.EmulatedGraphs` instead.
    """
    return _train_runs([config], [method] if method is not None else None, device=device,
                       checkpoint_dir=checkpoint_dir, data_root=data_root, progress=progress,
                       callbacks=callbacks, deadline=deadline, stack=False, cuda_graph=cuda_graph)[0]


def train_stacked(
    configs: Sequence[RunConfig],
    *,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    data_root: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Callable[[int, dict], None]] = (),
    deadline: float | None = None,
    cuda_graph: bool | Any = False,
) -> list[dict[str, Any]]:
    """Train several seeds of one run at once and return their records, in order (the reproduction chapter).

    ``configs`` differ in their seed only. Their encoders run as one batched computation
    (:class:`~mmlab.models.stacked.StackedEncoders`); everything else -- the method's hooks, the
    optimiser, the logs, the evaluation, the checkpoints and the records -- stays each run's own,
    so every record is the one :func:`train` would make (up to floating-point rounding), and a
    checkpoint written here resumes under :func:`train` as well. Runs that resume from different
    epochs, or a method whose model connects its encoders (Greedy's MMTM), are trained one after
    the other instead. A non-finite loss in one run stops all of them (each keeps its last
    checkpoint); ``deadline`` and ``cuda_graph`` are as for :func:`train`.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("train_stacked needs at least one config")
    if len({c.with_(seed=0).key for c in configs}) > 1:
        raise ValueError("stacked runs must differ in their seed only; got "
                         + ", ".join(sorted({c.label for c in configs})))
    if len({c.seed for c in configs}) < len(configs):
        raise ValueError(f"stacked runs need distinct seeds, got {[c.seed for c in configs]}")
    return _train_runs(configs, None, device=device, checkpoint_dir=checkpoint_dir, data_root=data_root,
                       progress=progress, callbacks=callbacks, deadline=deadline, stack=len(configs) > 1,
                       cuda_graph=cuda_graph)


@dataclass
class _Run:
    """One run's own part of a training: everything but the data and the encoders' batched forward."""

    config: RunConfig
    method: Method
    model: MultimodalClassifier
    groups: ParameterGroups
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    log: _EpochLog
    state: TrainState
    train_batches: ResidentBatches
    checkpoint_path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    wall_before: float = 0.0
    resumed: bool = False
    earlier_commits: list = field(default_factory=list)
    earlier_sources: list = field(default_factory=list)  # source digests of a resumed run's earlier parts
    last_epoch_s: float = 0.0  # the duration of the last epoch, checkpoint included (for ``deadline``)
    correct: Any = None
    seen: int = 0
    last_losses: dict[str, torch.Tensor] | None = None  # the last step's loss terms (for an error message)


@dataclass
class _Data:
    """The data every run of one training shares, on the device: the splits, the shuffled training batches, and
    the evaluated splits' batches (val, test, and any further test-like splits a dataset adds, such as CG-MNIST's
    ``test@agreement=...``)."""

    splits: dict[str, Any]
    train: ResidentBatches
    evaluated: list[str]
    eval_batches: dict[str, ResidentBatches]


def _load_data(first: RunConfig, spec, modalities, device: torch.device, data_root) -> _Data:
    """The splits and their batches (the same for every run: they differ in their seed only)."""
    splits = spec.load_splits(
        train_size=first.train_size, val_size=first.val_size, test_size=first.test_size,
        data_seed=first.data_seed, options=first.dataset_options, root=data_root,
    )
    train_batches = ResidentBatches(splits["train"], modalities, first.batch_size, device,
                                    shuffle=True, seed=first.seed,
                                    transform=spec.batch_transform(first.dataset_options))
    evaluated = ["val", "test", *(s for s in splits if s.startswith("test@"))]
    eval_batches = {s: ResidentBatches(splits[s], modalities, eval_batch_size(device), device)
                    for s in evaluated}
    return _Data(splits=splits, train=train_batches, evaluated=evaluated, eval_batches=eval_batches)


class _Evaluation:
    """Evaluates a run on any split by name, the training split included (made on first use: the training samples
    in their order, without augmentation, and no extra copy of them); :meth:`attach` hands it to the methods'
    hooks (``state.evaluate``, ``state.features``: G-Blending evaluates before an epoch, UDI encodes a split)."""

    def __init__(self, data: _Data, num_classes: int, device: torch.device):
        self.data, self.num_classes, self.device = data, num_classes, device

    def batches_of(self, split: str) -> ResidentBatches:
        batches = self.data.eval_batches
        if split not in batches:
            if split != "train":
                raise UnknownNameError("split", split, ["train", *self.data.evaluated])
            batches["train"] = self.data.train.for_evaluation(eval_batch_size(self.device))
        return batches[split]

    def __call__(self, run: _Run, split: str) -> dict[str, float]:
        return evaluate(run.model, self.batches_of(split), self.num_classes, split, run.method.prediction)

    def features(self, run: _Run, split: str):
        return encode_split(run.model, self.batches_of(split))

    def attach(self, runs: list[_Run]) -> None:
        for run in runs:
            run.state.evaluate = lambda split, run=run: self(run, split)
            run.state.features = lambda split, run=run: self.features(run, split)


def _stacked_encoders(runs: list[_Run]):
    """For several seeds at once: their encoders as one batched model, or ``None`` where they cannot
    train as one (different resume epochs, a model that connects its encoders, several optimiser steps per batch,
    a method that declares itself not stackable)."""
    from ..models.stacked import StackedEncoders, stackable

    several_substeps = len(runs[0].method.substeps(runs[0].state)) > 1  # (MLA) a step per modality
    if (len({r.start_epoch for r in runs}) > 1 or not stackable(runs[0].model) or several_substeps
            or not runs[0].method.stackable):
        return None
    return StackedEncoders([r.model for r in runs])


@dataclass(frozen=True)
class _StepSettings:
    """How every step of a training trains, fixed before its first epoch: the stacked encoders
    (:func:`_stacked_encoders`, or ``None``), the autocast context, every how many steps a loss is checked for a
    non-finite value (0: never, so that the device never waits: a captured step), and the greedy-learner
    measures' logger of learning speeds (``None`` unless the run measures the imbalance)."""

    stacked: Any
    autocast: Any
    check_every: int
    log_learning_speeds: Callable | None = None


def _captured_steps(graphs, runs: list[_Run], settings: _StepSettings, measure: bool):
    """With a graph backend: the device's part of a full step, captured once and replayed (``None``:
    eager steps; a method that is not capturable, or a run that measures the imbalance every step, trains
    eagerly, with a warning)."""
    if graphs is None:
        return None
    method = runs[0].method
    if is_capturable(method) and not measure:
        replayable = replace(settings, check_every=0, log_learning_speeds=None)
        return CapturedSteps(graphs, runs, lambda batches: _device_step(runs, batches, replayable, False),
                             _step_state)
    why = "it measures the imbalance every step" if measure else f"method {method.name!r} is not capturable"
    warnings.warn(f"cuda_graph: {runs[0].config.label} trains eagerly: {why}", stacklevel=4)
    return None


def _start_epoch(runs: list[_Run], epoch: int, captured, device: torch.device) -> None:
    """Each run's ``on_epoch_start`` hook, its epoch log and count of correct predictions reset."""
    for run in runs:
        run.state.epoch = epoch
        run.model.train()
        run.method.on_epoch_start(run.state)
        run.log.reset()
        if run.correct is None:
            run.correct = torch.zeros((), dtype=torch.long, device=device)
        run.correct.zero_()  # in place: a captured step adds to this very tensor
        run.seen = 0
    if captured is not None:
        captured.start_epoch()


def _train_epoch(runs: list[_Run], epoch: int, settings: _StepSettings, captured, progress: bool) -> None:
    """Every step of one epoch, for every run (:func:`_train_step`), until the device has done them all."""
    epoch_batches = [_epoch_batches(run, epoch, len(runs)) for run in runs]
    steps = progress_bar(zip(*(batches for batches, _ in epoch_batches)), progress=progress,
                         total=epoch_batches[0][1], leave=False, desc=f"epoch {epoch + 1}", unit="batch")
    for batches in steps:
        _train_step(runs, batches, settings, captured)
    if captured is not None:
        captured.flush()
    wait_for_device(runs[0].state.device)  # steps still queued on a GPU belong to this epoch's training time


def _end_epoch(run: _Run, epoch: int, train_seconds: float, evaluation: _Evaluation, probes) -> None:
    """One run's epoch metrics (training means, every evaluated split, the imbalance measures if asked for, and
    what its ``on_epoch_end`` hook returns), appended to its history; a non-finite epoch loss is an error."""
    epoch_log = run.log.means()  # converting to floats waits for the device: the epoch is done
    if not math.isfinite(epoch_log.get("train/loss", 0.0)):
        _raise_non_finite(run, epoch)
    metrics: dict[str, Any] = {"epoch": epoch + 1, "step": run.state.step,
                               "train/acc": float(run.correct) / max(run.seen, 1), **epoch_log,
                               "time/train_s": train_seconds}
    for split in evaluation.data.evaluated:
        metrics.update(evaluation(run, split))
    if probes is not None:
        from ..imbalance import imbalance_metrics

        # what the method predicts with, where it is not the fused head (UDI, MLA, ReconBoost)
        own = type(run.method).prediction is not Method.prediction
        metrics.update(imbalance_metrics(run.model, probes, run.method.prediction if own else None))
    metrics.update(run.method.on_epoch_end(run.state, lambda split: evaluation(run, split)) or {})
    run.history.append(metrics)


def _save_run_checkpoint(run: _Run, epochs_done: int, wall_time_s: float, last_epoch_s: float,
                         code_version, source) -> None:
    """Everything a run needs to resume after ``epochs_done`` epochs, written atomically."""
    save_checkpoint(run.checkpoint_path, {
        "config_key": run.config.key, "config": run.config.to_dict(), "epochs_done": epochs_done,
        "step": run.state.step, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "method": run.method.state_dict(), "generator": run.generator.get_state(),
        "torch_rng": torch.get_rng_state(), "history": run.history,
        "wall_time_s": wall_time_s,
        "git_commits": run.earlier_commits + [code_version[0]],
        "source_digests": run.earlier_sources + [source],
        "last_epoch_s": last_epoch_s,
    })


def _run_record(run: _Run, splits, device: torch.device, wall_time_s: float, code_version, source,
                stacked_runs: int | None, graphs, captured) -> dict[str, Any]:
    """The record of a finished run (:mod:`mmlab.results`), with its provenance and how it was trained."""
    from ..provenance import provenance
    from ..results import make_record

    prov = provenance(device=describe_device(device), wall_time_s=wall_time_s, resumed=run.resumed,
                      code_version=code_version, earlier_commits=run.earlier_commits, source=source,
                      earlier_sources=run.earlier_sources)
    if stacked_runs is not None:
        prov["stacked_runs"] = stacked_runs  # trained together: the wall time is the group's
    if graphs is not None:  # how this process trained: steps replayed from a graph, if any
        prov["cuda_graph"] = {"backend": graphs.name, "captured": captured is not None,
                              "replayed_steps": captured.replayed if captured is not None else 0,
                              "graphs": len(captured.graphs) if captured is not None else 0}
        if captured is not None and captured.failure is not None:
            prov["cuda_graph"]["failure"] = captured.failure
    return make_record(run.config, run.history, splits, prov, checkpoint_path=run.checkpoint_path)


def _train_runs(configs: list[RunConfig], methods: list[Method] | None, *, device, checkpoint_dir, data_root,
                progress: bool, callbacks, deadline: float | None, stack: bool,
                cuda_graph: bool | Any = False) -> list[dict[str, Any]]:
    """The loop itself, in named phases: the data (:func:`_load_data`), each run's model, optimiser and method
    (:func:`_prepare_run`, resumed from its checkpoint), the stacked encoders (:func:`_stacked_encoders`), the
    evaluation (:class:`_Evaluation`) and the captured steps (:func:`_captured_steps`); then, each epoch,
    :func:`_start_epoch`, :func:`_train_epoch`, :func:`_end_epoch` and a checkpoint per run; then the records."""
    from ..provenance import git_commit, source_digest

    for config in configs:
        config.validate()
    code_version = git_commit()  # the code this process imported, before the checkout can move on
    source = source_digest()
    first = configs[0]
    spec = get_dataset(first.dataset)
    methods = methods or [build_method(c.method, list(spec.modalities), **c.method_options) for c in configs]
    device = pick_device(device)
    graphs = _graph_backend(cuda_graph, device)  # refused here, before any data is loaded, on a CPU
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fastest convolutions; GPU runs are not bit-reproducible
    modalities = methods[0].modalities(list(spec.modalities))

    data = _load_data(first, spec, modalities, device, data_root)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir()
    runs = [_prepare_run(config, method, spec, modalities, device, data.train.reseeded(config.seed),
                         checkpoint_dir)
            for config, method in zip(configs, methods)]
    stacked = _stacked_encoders(runs) if stack else None
    if stack and stacked is None:  # one after the other,
        # each with a method object of its own (these ones have been set up on the models above)
        return [_train_runs([c], None, device=device, checkpoint_dir=checkpoint_dir, data_root=data_root,
                            progress=progress, callbacks=callbacks, deadline=deadline, stack=False,
                            cuda_graph=cuda_graph)[0]
                for c in configs]
    evaluation = _Evaluation(data, spec.num_classes, device)
    evaluation.attach(runs)
    measure = first.measure_imbalance  # the greedy-learner measures (chapter 2), if asked for
    probes, log_learning_speeds = None, None
    if measure:
        from ..imbalance import log_learning_speeds, probe_batches

        probes = {s: probe_batches(data.splits[s], modalities, device, batch_size=eval_batch_size(device))
                  for s in ("train", "val")}
    # bf16 autocast (no loss scaling needed: bfloat16 has float32's exponent range); a captured step
    # cannot use autocast's cache of casted weights (it would replay a stale copy)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=first.precision == "bf16",
                              cache_enabled=graphs is None)
    settings = _StepSettings(stacked, autocast, check_every=1 if device.type == "cpu" else 25,
                             log_learning_speeds=log_learning_speeds)
    captured = _captured_steps(graphs, runs, settings, measure)

    label = first.label if len(runs) == 1 else f"{first.label} seeds {','.join(str(c.seed) for c in configs)}"
    start_epoch, last_epoch_s = runs[0].start_epoch, max(r.last_epoch_s for r in runs)
    t_start = time.perf_counter()
    epochs = progress_bar(range(start_epoch, first.epochs), progress=progress, desc=label,
                          initial=start_epoch, total=first.epochs, unit="epoch")
    for epoch in epochs:
        if deadline is not None and time.time() + last_epoch_s > deadline:
            epochs.close()
            raise _time_limit(first, label, epoch, runs[0].checkpoint_path)
        _start_epoch(runs, epoch, captured, device)
        t_epoch, wall_epoch = time.perf_counter(), time.time()
        _train_epoch(runs, epoch, settings, captured, progress)
        train_seconds = time.perf_counter() - t_epoch
        for run in runs:
            _end_epoch(run, epoch, train_seconds, evaluation, probes)
            _save_run_checkpoint(run, epoch + 1, run.wall_before + time.perf_counter() - t_start,
                                 time.time() - wall_epoch, code_version, source)
        epochs.set_postfix({"test acc": " ".join(f"{run.history[-1]['test/acc']:.3f}" for run in runs)})
        for run in runs:
            for callback in callbacks:
                callback(epoch, run.history[-1])
        last_epoch_s = time.time() - wall_epoch

    return [_run_record(run, data.splits, device, run.wall_before + time.perf_counter() - t_start, code_version,
                        source, len(runs) if stacked is not None else None, graphs, captured)
            for run in runs]


def _graph_backend(cuda_graph, device: torch.device):
    """``None`` (eager steps), CUDA graphs for ``True``, or the backend object given (tests)."""
    if cuda_graph is None or cuda_graph is False:
        return None
    if cuda_graph is True:
        return CudaGraphs(device)
    return cuda_graph


def _epoch_batches(run: _Run, epoch: int, group_size: int):
    """The batches of one run's epoch and how many there are: every training sample once, or the samples its
    method asks for (:meth:`~mmlab.methods.Method.epoch_samples`), with ``state.batch_positions`` set for each
    batch as it is drawn (that is, just before its step)."""
    samples = run.method.epoch_samples(run.state)
    run.state.batch_positions = None
    if samples is None:
        return run.train_batches.epoch(epoch), len(run.train_batches)
    if group_size > 1:
        raise ValueError(f"method {run.method.name!r} chooses each epoch's samples: its runs cannot train as one "
                         "stacked model (declare stackable = False)")
    # checked here, before the epoch's first batch is drawn (epoch_of checks again: it is public)
    samples = check_samples(samples, run.train_batches.num_samples)

    def positioned():
        for inputs, labels, positions in run.train_batches.epoch_of(epoch, samples):
            run.state.batch_positions = positions
            yield inputs, labels
        run.state.batch_positions = None

    return positioned(), run.train_batches.batches_in(len(samples))


def _step_state(run: _Run) -> list[torch.Tensor]:
    """Every tensor a training step of ``run`` changes (parameters, buffers, optimiser state, the
    epoch's count of correct predictions)."""
    tensors = list(run.model.state_dict(keep_vars=True).values())
    for state in run.optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors + [run.correct]


def _optimizer_groups(model: MultimodalClassifier, groups: ParameterGroups, method: Method):
    """What the optimiser is built on: ``model.parameters()`` (one group), or, for a method with
    ``per_modality_learning_rates``, one named group per modality's encoder (``encoder/<m>``) and one for every
    other parameter (``shared``)."""
    if not method.per_modality_learning_rates:
        return model.parameters()
    named = [{"params": list(ps), "name": f"encoder/{m}"} for m, ps in groups.encoders.items()]
    grouped = {id(p) for g in named for p in g["params"]}
    named.append({"params": [p for p in model.parameters() if id(p) not in grouped], "name": "shared"})
    return named


def _prepare_run(config: RunConfig, method: Method, spec, modalities, device: torch.device,
                 train_batches: ResidentBatches, checkpoint_dir: Path) -> _Run:
    """The model, optimiser and method state of one run, resumed from its checkpoint if there is one."""
    torch.manual_seed(config.seed)
    model = build_model(spec, modalities, method.needs_unimodal_heads, fusion=method.fusion,
                        fusion_options=method.fusion_options).to(device)
    if spec.channels_last:
        model.use_channels_last()  # same parameters, NHWC strides
    groups = model.parameter_groups()
    optimizer = torch.optim.SGD(_optimizer_groups(model, groups, method), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed + 7919)
    log = _EpochLog()
    state = TrainState(model=model, groups=groups, optimizer=optimizer, device=device,
                       num_epochs=config.epochs, steps_per_epoch=len(train_batches),
                       generator=generator, logger=log)
    method.setup(state)
    run = _Run(config=config, method=method, model=model, groups=groups, optimizer=optimizer,
               generator=generator, log=log, state=state, train_batches=train_batches,
               checkpoint_path=checkpoint_dir / f"{config.key}.pt")
    if run.checkpoint_path.exists():
        ckpt = load_checkpoint(run.checkpoint_path, map_location=device)
        if ckpt.get("config_key") != config.key:
            raise RuntimeError(f"Checkpoint {run.checkpoint_path} belongs to another config; delete it.")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        method.load_state_dict(ckpt["method"])
        generator.set_state(ckpt["generator"].cpu())
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        run.history, run.start_epoch, state.step = ckpt["history"], ckpt["epochs_done"], ckpt["step"]
        run.wall_before, run.resumed = ckpt["wall_time_s"], True
        run.earlier_commits = ckpt.get("git_commits", [])
        run.earlier_sources = ckpt.get("source_digests", [None])  # None: not kept (checkpoints before 2026-12-02)
        run.last_epoch_s = ckpt.get("last_epoch_s", 0.0)
    return run


def _train_step(runs: list[_Run], batches, settings: _StepSettings, captured=None) -> None:
    """One optimiser step of every run (see :mod:`mmlab.methods.base` for the hooks' order): the device's
    part eagerly, or replayed by ``captured`` (:class:`~mmlab.training.graph.CapturedSteps`) for a full,
    non-probe batch; then the host's part."""
    step, probe_every = runs[0].state.step, runs[0].config.grad_probe_every
    probe = bool(probe_every) and step % probe_every == 0
    full = all(len(labels) == run.config.batch_size for run, (_, labels) in zip(runs, batches))
    substeps = runs[0].method.substeps(runs[0].state)
    if len(substeps) > 1:  # several optimiser steps on this batch (MLA), one after another
        if len(runs) > 1:
            raise ValueError(f"method {runs[0].method.name!r} takes {len(substeps)} optimiser steps per batch: "
                             "train its runs one at a time (no stacking)")
        for k, substep in enumerate(substeps):
            runs[0].state.substep = substep
            _device_step(runs, batches, settings, probe and k == 0, count=k == len(substeps) - 1)
        runs[0].state.substep = None
    elif captured is None or probe or not full:
        _device_step(runs, batches, settings, probe)
    else:
        captured.step(batches)
    for run, (_, labels) in zip(runs, batches):
        run.state.step += 1
        run.method.on_step_end(run.state)
        run.seen += len(labels)


def _device_step(runs: list[_Run], batches, settings: _StepSettings, probe: bool, count: bool = True) -> None:
    """The device's part of one step of every run: forward, losses, gradients, the method's gradient
    hooks, the optimiser step and the step's logs. With ``settings.check_every`` 0 it never waits for the
    device, so a CUDA graph can capture it (:mod:`mmlab.training.graph`); the host's part (step
    counters, ``on_step_end``) is :func:`_train_step`'s. ``count``: whether the step's correct predictions
    count towards the training accuracy (the last substep of a batch only)."""
    stacked, autocast, check_every = settings.stacked, settings.autocast, settings.check_every
    log_learning_speeds = settings.log_learning_speeds
    outputs, all_losses, totals = [], [], []
    with autocast:
        features = None
        if stacked is not None:  # every run's encoders in one batched call; the rest per run
            features = stacked({m: torch.stack([inputs[m] for inputs, _ in batches]) for m in stacked.modalities})
        for k, (run, (inputs, labels)) in enumerate(zip(runs, batches)):
            run.state.labels, run.state.inputs = labels, inputs

            def intervene(f, run=run):
                return run.method.intervene(f, run.state)

            if features is None:
                output = run.model(inputs, intervene=intervene)
            else:
                output = run.model.fuse({m: z[k] for m, z in features.items()}, intervene)
            losses = run.method.losses(output, labels, run.state)
            outputs.append(output)
            all_losses.append(losses)
            totals.append(run.method.total_loss(losses, run.state))
    for run, total, losses in zip(runs, totals, all_losses):
        run.last_losses = losses
        if check_every and (run.state.step % check_every == 0) and not torch.isfinite(total):
            _raise_non_finite(run, run.state.epoch)
        run.optimizer.zero_grad(set_to_none=True)
    method = runs[0].method
    if method.per_loss_gradients or probe:
        if features is None:
            grads = [per_loss_encoder_gradients(outputs[0], all_losses[0], runs[0].groups)]
        else:
            grads = stacked_per_loss_encoder_gradients(features, all_losses, [run.groups for run in runs])
        if probe:
            for run, g in zip(runs, grads):
                _log_gradient_probe(g, run.log)
    if method.per_loss_gradients:
        for run, g, total in zip(runs, grads, totals):
            _apply_combined_gradients(run.method, run.state, g, total, run.groups)
    elif len(totals) == 1:
        totals[0].backward()
    else:
        torch.autograd.backward(totals)  # one backward pass through the stacked encoders
    for run, output, losses, total, (_, labels) in zip(runs, outputs, all_losses, totals, batches):
        run.method.transform_gradients(output, labels, run.state)
        if log_learning_speeds is not None:
            log_learning_speeds(run.groups, run.log)
        for m, params in run.groups.encoders.items():
            run.log(f"train/grad_norm/{m}", global_norm([p.grad for p in params], device=params[0].device))
        run.optimizer.step()
        run.log("train/loss", total)
        for name, value in losses.items():
            run.log(f"train/loss/{name}", value)
        if count:
            run.correct += (run.method.prediction(output).detach().argmax(1) == labels).sum()


def stacked_per_loss_encoder_gradients(
    features: dict[str, torch.Tensor], all_losses: list[dict[str, torch.Tensor]], all_groups: list[ParameterGroups]
) -> list[dict[str, dict[str, list[torch.Tensor]]]]:
    """:func:`per_loss_encoder_gradients` of every stacked run at once: ``grads[k][m][loss]``.

    Run ``k``'s losses reach only its slice ``features[m][k]`` of the stacked features, so the
    gradient of the sum over runs of one loss, w.r.t. the stacked features, holds every run's own
    gradient; one vector-Jacobian product through the stacked encoder then gives each run's encoder
    gradient, where ``K`` separate products would each go through all ``K`` encoders.
    """
    modalities = list(features)
    stacked = [features[m] for m in modalities]
    grads: list[dict[str, dict[str, list[torch.Tensor]]]] = [{m: {} for m in modalities} for _ in all_groups]
    for name in all_losses[0]:
        total = torch.stack([losses[name] for losses in all_losses]).sum()
        d_features = torch.autograd.grad(total, stacked, retain_graph=True, allow_unused=True)
        for m, dz in zip(modalities, d_features):
            if dz is None:
                continue
            params = [p for groups in all_groups for p in groups.encoders[m]]
            g = torch.autograd.grad(features[m], params, grad_outputs=dz, retain_graph=True, allow_unused=True)
            start = 0
            for k, groups in enumerate(all_groups):
                own = groups.encoders[m]
                grads[k][m][name] = [torch.zeros_like(p) if gi is None else gi
                                     for p, gi in zip(own, g[start:start + len(own)])]
                start += len(own)
    return grads


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


def _time_limit(config: RunConfig, label: str, epoch: int, checkpoint_path: Path) -> TimeLimitReached:
    kept = ("its checkpoint is kept: run it again to resume" if epoch else "no epoch was trained")
    seed = "" if " seeds " in label else f" seed {config.seed}"
    return TimeLimitReached(f"time limit: {label}{seed} stopped before epoch {epoch + 1} of {config.epochs}; {kept}",
                            epochs_done=epoch)


def _raise_non_finite(run: _Run, epoch: int, losses: dict[str, torch.Tensor] | None = None):
    losses = run.last_losses if losses is None else losses
    terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in (losses or {}).items())
    checkpoint_path = run.checkpoint_path
    kept = (f"The last good checkpoint (end of epoch {epoch}) is kept at {checkpoint_path}."
            if checkpoint_path.exists() else "No epoch had finished, so there is no checkpoint.")
    raise NonFiniteLossError(
        f"Non-finite training loss in epoch {epoch + 1} (by step {run.state.step}): {terms} "
        f"({run.config.label}, seed {run.config.seed}). {kept} "
        "Lower the learning rate, or check the inputs for NaN, then run again to resume."
    )
