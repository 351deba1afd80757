"""Training: the one loop, checkpoints, and ``load_or_run``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import RunConfig
from .device import pick_device  # noqa: F401
from .loop import evaluate, per_loss_encoder_gradients, train, train_stacked  # noqa: F401


def load_or_run(config: RunConfig, *, store=None, overwrite: bool = False, device=None,
                progress: bool = True, data_root: str | None = None,
                keep_weights: bool = False, deadline: float | None = None,
                cuda_graph: bool = False) -> dict[str, Any]:
    """The stored record of ``config`` if there is one; else train, store, return it.

    With ``overwrite=True`` the run is trained again and replaces the record.
    An interrupted run resumes from its checkpoint; the checkpoint is removed
    once the record is safely written. With ``keep_weights=True`` the final
    model weights are kept beside the record (``ResultsStore.weights_path``);
    a stored record whose weights were not kept is then trained again. ``deadline``: as for
    :func:`train` (the run may stop early with :class:`~mmlab.errors.TimeLimitReached`); ``cuda_graph``
    as well (steps replayed from a CUDA graph, :mod:`mmlab.training.graph`).
    """
    from ..results import ResultsStore, warn_if_other_code

    store = store if store is not None else ResultsStore()
    if not overwrite:
        record = store.load(config)
        if record is not None and (not keep_weights or store.weights_path(config).exists()):
            warn_if_other_code(record)
            return record
        overwrite = record is not None  # only the weights are missing: train it again
    record = train(config, device=device, progress=progress, data_root=data_root,
                   checkpoint_dir=store.checkpoint_dir, deadline=deadline, cuda_graph=cuda_graph)
    return _store_record(store, record, overwrite=overwrite,
                         weights_path=store.weights_path(config) if keep_weights else None)


def load_or_run_stacked(configs: Sequence[RunConfig], *, store=None, overwrite: bool = False, device=None,
                        progress: bool = True, data_root: str | None = None,
                        deadline: float | None = None, cuda_graph: bool = False) -> list[dict[str, Any]]:
    """:func:`load_or_run` for several seeds of one run: the stored records of those recorded, and
    the others trained together (:func:`train_stacked`, the reproduction chapter), each stored as it would be
    alone. Returns the records in the order of ``configs``."""
    from ..results import ResultsStore, warn_if_other_code

    store = store if store is not None else ResultsStore()
    records = {} if overwrite else {config.key: store.load(config) for config in configs}
    for record in records.values():
        if record is not None:
            warn_if_other_code(record)
    todo = [config for config in configs if records.get(config.key) is None]
    if len(todo) == 1:  # alone, as load_or_run trains it
        records[todo[0].key] = load_or_run(todo[0], store=store, overwrite=overwrite, device=device,
                                           progress=progress, data_root=data_root, deadline=deadline,
                                           cuda_graph=cuda_graph)
    elif todo:
        trained = train_stacked(todo, device=device, progress=progress, data_root=data_root,
                                checkpoint_dir=store.checkpoint_dir, deadline=deadline, cuda_graph=cuda_graph)
        for config, record in zip(todo, trained):
            records[config.key] = _store_record(store, record, overwrite=overwrite)
    return [records[config.key] for config in configs]


def _store_record(store, record: dict[str, Any], *, overwrite: bool, weights_path: Path | None = None):
    """Write a new record (and, with ``weights_path``, its final weights), then remove the run's
    checkpoint: only once the record is safely on disk."""
    checkpoint = record.pop("_checkpoint", None)
    if weights_path is not None and checkpoint:
        from .checkpoint import load_checkpoint, save_checkpoint

        save_checkpoint(weights_path, {"config_key": record["key"],
                                       "model": load_checkpoint(checkpoint, "cpu")["model"]})
    store.save(record, overwrite=overwrite)
    if checkpoint:
        Path(checkpoint).unlink(missing_ok=True)
    return record


def load_trained_model(config: RunConfig, *, store=None, device=None, progress: bool = True,
                       data_root: str | None = None):
    """``(model, record)``: the model of ``config`` with its final weights, trained
    first if needed (chapter 4 measures gradients at these fixed parameters)."""
    from ..data.registry import get_dataset
    from ..methods import build_method
    from ..models import build_model
    from ..results import ResultsStore
    from .checkpoint import load_checkpoint

    store = store if store is not None else ResultsStore()
    record = load_or_run(config, store=store, device=device, progress=progress, data_root=data_root,
                         keep_weights=True)
    spec = get_dataset(config.dataset)
    method = build_method(config.method, list(spec.modalities), **config.method_options)
    model = build_model(spec, method.modalities(list(spec.modalities)), method.needs_unimodal_heads,
                        fusion=method.fusion, fusion_options=method.fusion_options)
    saved = load_checkpoint(store.weights_path(config), map_location="cpu")
    if saved.get("config_key") != config.key:
        raise RuntimeError(f"{store.weights_path(config)} holds the weights of another config; delete it.")
    model.load_state_dict(saved["model"])
    return model.to(pick_device(device)), record
