"""The training step captured once and replayed: CUDA graphs (the reproduction chapter, *Speed*).

On a GPU a CG-MNIST step at batch 64 is bound by the launches of its few hundred small kernels,
not by arithmetic. A CUDA graph records the kernels of one step once and launches them again as a
single unit; ``benchmarks/bench_cuda_graph.py`` measured 5.3x (uniform baseline) and 5.9x
(MMPareto) over eager steps on an H200. :class:`CapturedSteps` brings that to the one training loop
(``train(..., cuda_graph=True)``, ``python -m mmlab sweep --cuda-graph``):

* the step that is captured is the loop's own device step (:func:`mmlab.training.loop._device_step`),
  the same code the eager path runs, so the two cannot drift;
* a graph replays exactly the kernels it recorded: every batch is copied into static input buffers,
  Python numbers read during the capture stay fixed, and nothing in the step may wait for the
  device. So only methods that declare ``capturable = True`` on their own class are captured
  (their hooks are tensor functions of the batch and the parameters, and they log tensors only);
* a method whose step differs between phases of the training (OGM-GE and OPM inside and outside
  their window of epochs) names the phase (``capture_key``): one graph per phase; the generator a
  method draws from (``state.generator``) is registered with each graph, so replays draw anew;
* what stays eager: the first ``warmup_steps`` steps in a process (a capture needs the optimiser's
  buffers and cuDNN's choices to exist), the gradient-probe steps (another computation), the last,
  smaller batch of an epoch (another shape), runs that measure the imbalance measures every step;
* a capture the device refuses (a RuntimeError from CUDA) does not stop the run: it warns, the rest
  of the run trains eagerly, and the record's provenance says why (``cuda_graph.failure``);
* per-step logs are summed on the device (one addition per step for all of them) and handed to the
  epoch's log at its end; a non-finite loss is caught at the epoch's end (from the logged loss),
  not at the step, and the last good checkpoint is kept as before.

:class:`EmulatedGraphs` replays by running the step again: it lets the tests on a CPU check every
part of this but the CUDA graph itself (that part is checked on a GPU: ``scripts/gpu_session.sh``).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Sequence

import torch

from ..errors import NotCapturableError


def is_capturable(method) -> bool:
    """Whether ``method``'s class itself declares ``capturable = True`` (a subclass that changes a
    hook must say it again: inheriting the flag would capture hooks nobody checked)."""
    return bool(type(method).__dict__.get("capturable", False))


class StepRecorder:
    """The logger of a step while it is captured: keeps each logged tensor, in order.

    A Python number logged per step would be frozen into the graph at its captured value, so it is
    refused with the name of the value."""

    def __init__(self, method_name: str):
        self.method_name = method_name
        self.names: list[str] = []
        self.values: list[torch.Tensor] = []

    def __call__(self, name: str, value: Any) -> None:
        if not isinstance(value, torch.Tensor):
            raise NotCapturableError(
                f"method {self.method_name!r} logs {name!r} as a Python number in its training step; "
                "a captured step would replay the captured value. Log a tensor, or set capturable = False.")
        self.names.append(name)
        self.values.append(value.detach())

    def packed(self, device: torch.device) -> torch.Tensor:
        """All logged values as one float64 vector (so one addition per step accumulates them)."""
        if not self.values:
            return torch.zeros(0, dtype=torch.float64, device=device)
        return torch.stack([v.reshape(()).to(torch.float64) for v in self.values])


class CudaGraphs:
    """Capture with :class:`torch.cuda.CUDAGraph`; warm-up steps run on a side stream, as capturing requires."""

    name = "cuda"

    def __init__(self, device: torch.device):
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; this run trains on {device}. "
                             "Leave cuda_graph off (--cuda-graph) on a CPU.")
        self.device = device
        self.side = torch.cuda.Stream(device)

    @contextlib.contextmanager
    def warmup(self):
        self.side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(self.side):
                yield
        finally:  # a step that raised still leaves the main stream after the side stream's work
            torch.cuda.current_stream(self.device).wait_stream(self.side)

    def capture(self, body: Callable[[], torch.Tensor], state: Callable[[], Sequence[torch.Tensor]],
                generators: Sequence[torch.Generator] = ()):
        """``(replay, output)``: ``replay()`` launches the recorded step; ``output`` is the static tensor
        ``body`` returned, refreshed by every replay. Capturing runs nothing. The methods' generators are
        registered with the graph, so that every replay draws new random numbers from them."""
        graph = torch.cuda.CUDAGraph()
        for generator in generators:
            graph.register_generator_state(generator)
        stream = torch.cuda.current_stream(self.device)
        try:
            with torch.cuda.graph(graph):
                output = body()
        except BaseException:
            # where ending a spoilt capture raises too, torch.cuda.graph leaves its capture stream current:
            # the eager steps that follow must run on the stream they ran on before
            torch.cuda.set_stream(stream)
            raise
        return graph.replay, output


class EmulatedGraphs:
    """For tests without a GPU: ``capture`` runs the step once to learn its outputs and then puts every
    tensor of the run's state and every generator back (a real capture runs nothing); ``replay`` runs
    the step again and copies its output into the static one. Everything but the graph itself is exercised."""

    name = "emulated"

    def __init__(self, device: torch.device | None = None):  # CudaGraphs' signature, so that tests can swap it in
        self.captures = 0
        self.replays = 0

    @contextlib.contextmanager
    def warmup(self):
        yield

    def capture(self, body: Callable[[], torch.Tensor], state: Callable[[], Sequence[torch.Tensor]],
                generators: Sequence[torch.Generator] = ()):
        before = [t.detach().clone() for t in state()]
        generator_states = [g.get_state() for g in generators]
        output = body().clone()
        with torch.no_grad():
            for t, saved in zip(state(), before):
                t.copy_(saved)
        for g, saved in zip(generators, generator_states):
            g.set_state(saved)
        self.captures += 1

        def replay():
            self.replays += 1
            output.copy_(body())

        return replay, output


class _Graph:
    """One captured step: how to replay it, its static log output and the sums of it over the epoch."""

    def __init__(self, replay, names: list[list[str]], outputs: list[torch.Tensor]):
        self.replay, self.names, self.outputs = replay, names, outputs
        self.sums = [torch.zeros_like(o) for o in outputs]
        self.count = 0


class CapturedSteps:
    """The full-batch, non-probe steps of the runs trained together, replayed from captured graphs.

    ``device_step(batches)`` is the loop's device part of one step of every run; ``run_state(run)`` the
    tensors a step changes (for :class:`EmulatedGraphs`). :meth:`step` runs one step, eagerly or by
    replay; the loop does the host's part (step counters, ``on_step_end``) either way. A method whose
    step differs between phases of the training (OGM-GE inside and outside its modulation window)
    names the phase with ``capture_key(state)``: one graph is captured per phase, each after
    ``warmup_steps`` eager steps of that phase."""

    def __init__(self, backend, runs: Sequence, device_step: Callable, run_state: Callable,
                 warmup_steps: int = 3):
        self.backend, self.runs, self.device_step, self.run_state = backend, list(runs), device_step, run_state
        self.warmup_steps = warmup_steps
        self.warmup_left: dict[Any, int] = {}
        self.graphs: dict[Any, _Graph] = {}
        self.static_batches = None
        self.replayed = 0  # steps replayed from a graph, over the whole training (provenance)
        self.failure: str | None = None  # why a capture failed; every later step then runs eagerly

    def step(self, batches) -> bool:
        """Train one full-batch, non-probe step of every run; False if it ran eagerly."""
        if self.failure is not None:
            self.device_step(batches)
            return False
        key = self.runs[0].method.capture_key(self.runs[0].state)
        graph = self.graphs.get(key)
        if graph is None and self.warmup_left.setdefault(key, self.warmup_steps) > 0:
            self.warmup_left[key] -= 1
            with self.backend.warmup():
                self.device_step(batches)
            return False
        if self.static_batches is None:
            self.static_batches = [({m: x.clone() for m, x in inputs.items()}, labels.clone())
                                   for inputs, labels in batches]
        else:
            for (static_inputs, static_labels), (inputs, labels) in zip(self.static_batches, batches):
                for m, x in inputs.items():
                    static_inputs[m].copy_(x)
                static_labels.copy_(labels)
        if graph is None:
            try:
                graph = self.graphs[key] = self._capture()
            except RuntimeError as err:  # the device refused the capture: train on, eagerly, and say so
                cause = err  # the first error: ending a spoilt capture raises a generic one on top of it
                while isinstance(cause.__context__, Exception):
                    cause = cause.__context__
                if isinstance(cause, NotCapturableError):
                    raise cause  # the method's own mistake (a Python number logged per step): fix the method
                self.failure = (f"capture of phase {key!r} failed: {type(cause).__name__}: "
                                f"{str(cause).splitlines()[0]}")
                warnings.warn(f"cuda_graph: {self.failure}; the rest of the run trains eagerly", stacklevel=2)
                self.device_step(batches)
                return False
        for run, (static_inputs, static_labels) in zip(self.runs, self.static_batches):
            run.state.inputs, run.state.labels = static_inputs, static_labels  # as an eager step leaves them
        graph.replay()
        with torch.no_grad():
            for total, output in zip(graph.sums, graph.outputs):
                total.add_(output)
        graph.count += 1
        self.replayed += 1
        return True

    def _capture(self) -> _Graph:
        recorders = [StepRecorder(run.method.name) for run in self.runs]

        def body() -> torch.Tensor:
            saved = [(run.log, run.state.logger) for run in self.runs]
            for run, recorder in zip(self.runs, recorders):
                recorder.names.clear()
                recorder.values.clear()
                run.log, run.state.logger = recorder, recorder
            try:
                self.device_step(self.static_batches)
            finally:
                for run, (log, logger) in zip(self.runs, saved):
                    run.log, run.state.logger = log, logger
            return torch.cat([r.packed(self.static_batches[0][1].device) for r in recorders])

        def state() -> list[torch.Tensor]:
            return [t for run in self.runs for t in self.run_state(run)]

        generators = [run.state.generator for run in self.runs if run.state.generator is not None]
        replay, output = self.backend.capture(body, state, generators)
        sizes = [len(r.names) for r in recorders]
        return _Graph(replay, [list(r.names) for r in recorders], list(output.split(sizes)))

    def start_epoch(self) -> None:
        for graph in self.graphs.values():
            for total in graph.sums:
                total.zero_()
            graph.count = 0

    def flush(self) -> None:
        """Hand this epoch's replayed steps' logs to each run's epoch log (before its means are taken)."""
        for graph in self.graphs.values():
            if not graph.count:
                continue
            for run, names, total in zip(self.runs, graph.names, graph.sums):
                values = total.clone()
                for i, name in enumerate(names):
                    run.log.add_total(name, values[i], graph.count)
            graph.count = 0
