"""What capturing a whole training step in a CUDA graph would gain on a GPU: a probe.

    python benchmarks/bench_cuda_graph.py                    # needs a CUDA device
    python benchmarks/bench_cuda_graph.py --samples 8192 --repeats 3

On a GPU, a CG-MNIST step at batch 64 is bound by the launches of its many small kernels
(the reproduction chapter). A CUDA graph launches a captured step as one unit. This probe measures, for the
uniform baseline and for MMPareto, the bare step of ``bench_training.py`` (the same model,
losses and optimiser; MMPareto's per-loss encoder gradients and ``mmpareto_direction`` per
encoder) run eagerly and replayed from a graph captured once (``torch.cuda.graph``; each batch
is copied into static input buffers). ``graph_vs_eager`` is the ceiling a captured loop could
reach. The loop itself now captures its step (``train(..., cuda_graph=True)``, mmlab.training.graph;
measured by the "..., CUDA graph" cases of ``bench_training.py``); this bare probe stays as the
ceiling to compare it with. Full batches only, in both modes. The record, with provenance, goes
to ``results/benchmarks/cuda-graph-<device>.json`` after every case.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mmlab import RunConfig  # noqa: E402
from mmlab.book import device_slug, write_benchmark_record  # noqa: E402
from mmlab.data.registry import get_dataset  # noqa: E402
from mmlab.methods.gradient_integration import mmpareto_direction  # noqa: E402
from mmlab.models import build_model  # noqa: E402
from mmlab.provenance import git_commit  # noqa: E402
from mmlab.training import pick_device  # noqa: E402
from mmlab.training.batches import ResidentBatches  # noqa: E402
from mmlab.training.device import wait_for_device  # noqa: E402
from mmlab.training.loop import per_loss_encoder_gradients  # noqa: E402

CASES = ("uniform", "mmpareto")


def make_step(model, optimizer, case: str):
    """One bare training step of ``case`` on a batch: no host synchronisation, so it can be captured."""
    groups = model.parameter_groups()

    def step(inputs, labels):
        out = model(inputs)
        losses = {"multimodal": F.cross_entropy(out.logits, labels),
                  **{f"unimodal/{m}": F.cross_entropy(h, labels) for m, h in out.unimodal_logits.items()}}
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        if case == "uniform":
            total.backward()
        else:  # MMPareto: g_m and g_u per encoder, integrated; the heads get the plain sum
            grads = per_loss_encoder_gradients(out, losses, groups)
            for p, g in zip(groups.non_encoder(), torch.autograd.grad(total, groups.non_encoder())):
                p.grad = g
            for m, by_loss in grads.items():
                h, _ = mmpareto_direction(by_loss["multimodal"], by_loss[f"unimodal/{m}"])
                for p, g in zip(groups.encoders[m], h):
                    p.grad = g
        optimizer.step()
        return total.detach()

    return step


def _setup(case: str, samples: int, device, seed: int = 0):
    config = RunConfig.from_profile(profile="quick", method=case, train_size=samples, val_size=500, test_size=1000,
                                    seed=seed)
    spec = get_dataset(config.dataset)
    splits = spec.load_splits(train_size=config.train_size, val_size=config.val_size, test_size=config.test_size,
                              data_seed=config.data_seed)
    modalities = list(spec.modalities)
    data = ResidentBatches(splits["train"], modalities, config.batch_size, device, shuffle=True, seed=seed,
                           transform=spec.batch_transform(config.dataset_options))
    torch.manual_seed(seed)
    model = build_model(spec, modalities, True).to(device)
    if spec.channels_last:
        model.use_channels_last()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    return config, data, model, optimizer


def _full_batches(data, epoch: int, batch_size: int):
    return [(x, y) for x, y in data.epoch(epoch) if len(y) == batch_size]


def _last_epoch_throughput(data, batch_size: int, device, epochs: int, train_batch) -> float:
    """Samples/s of ``train_batch(inputs, labels)`` over the full batches of the last of ``epochs`` epochs."""
    seconds, done = 0.0, 0
    for epoch in range(epochs):
        batches = _full_batches(data, epoch, batch_size)
        wait_for_device(device)
        t0 = time.perf_counter()
        for inputs, labels in batches:
            train_batch(inputs, labels)
        wait_for_device(device)
        seconds, done = time.perf_counter() - t0, len(batches) * batch_size
    return done / seconds


def eager_throughput(case: str, samples: int, device, epochs: int = 2) -> float:
    """Samples/s of the eager bare step, on the full batches of the last of ``epochs`` epochs."""
    config, data, model, optimizer = _setup(case, samples, device)
    return _last_epoch_throughput(data, config.batch_size, device, epochs, make_step(model, optimizer, case))


def graph_throughput(case: str, samples: int, device, epochs: int = 2, warmup_steps: int = 3) -> float:
    """Samples/s of the same step replayed from one CUDA graph (captured after a few eager steps on
    a side stream, which the capture needs: cuDNN's choices made, the optimiser's buffers allocated)."""
    config, data, model, optimizer = _setup(case, samples, device)
    step = make_step(model, optimizer, case)
    first = _full_batches(data, 0, config.batch_size)
    static_inputs = {m: x.clone() for m, x in first[0][0].items()}
    static_labels = first[0][1].clone()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup_steps):
            step(static_inputs, static_labels)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = step(static_inputs, static_labels)

    def replay(inputs, labels):
        for m, x in inputs.items():
            static_inputs[m].copy_(x)
        static_labels.copy_(labels)
        graph.replay()

    throughput = _last_epoch_throughput(data, config.batch_size, device, epochs, replay)
    if not torch.isfinite(static_loss):
        raise FloatingPointError(f"{case}: the replayed step's loss is {static_loss.item()}")
    return throughput


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--samples", type=int, default=8192, help="training samples per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="alternate eager and graph this many times")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if device.type != "cuda":
        print(f"bench_cuda_graph needs a CUDA device (got {device}): CUDA graphs exist only there", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else REPO / "results" / "benchmarks" / f"cuda-graph-{device_slug(device)}.json"
    torch.backends.cudnn.benchmark = True  # as mmlab's loop on a GPU
    rows = []

    code_version = git_commit()  # the code this benchmark imported

    def write(complete: bool) -> None:
        write_benchmark_record(out, device, rows, complete=complete, code_version=code_version,
                               what="the bare uniform and MMPareto steps, eager and replayed from a CUDA graph")

    for case in args.cases:
        eager, graphed = [], []
        for _ in range(args.repeats):  # alternate, so that drifts of the machine hit both alike
            eager.append(eager_throughput(case, args.samples, device))
            graphed.append(graph_throughput(case, args.samples, device))
        ratios = [g / e for e, g in zip(eager, graphed)]
        rows.append({"case": case, "samples_per_epoch": args.samples, "batch_size": 64, "repeats": args.repeats,
                     "eager_samples_per_s": round(statistics.median(eager), 1),
                     "graph_samples_per_s": round(statistics.median(graphed), 1),
                     "graph_vs_eager": round(statistics.median(ratios), 3)})
        print(f"{case:10s} eager {rows[-1]['eager_samples_per_s']:9.1f}/s  graph {rows[-1]['graph_samples_per_s']:9.1f}/s"
              f"  x{rows[-1]['graph_vs_eager']:.2f}", flush=True)
        write(complete=False)
    write(complete=True)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
