"""Training throughput of mmlab's loop, beside a bare PyTorch loop, in one run.

    python benchmarks/bench_training.py                 # best device, default methods
    python benchmarks/bench_training.py --device cpu --samples 4096

For each method the loop trains two epochs on CG-MNIST (the first warms up; a schedule of chapter 6 may
train more, to reach the stage it times); the last epoch's training time (evaluation excluded) gives samples/s. The bare
loop trains the same model on the same device-resident tensors with the same
optimiser and losses, and nothing else: no hooks, no logging, no gradient probe,
no checkpoint. For a method that integrates per-loss gradients (MGDA, PCGrad,
MetaBalance, MMPareto) the bare loop computes the same two gradients per encoder
(one vector-Jacobian product per loss and encoder) and adds them: the arithmetic
floor of any method that needs them separately. ``ratio`` = loop / bare (1.0 = no
overhead); ``throughput_vs_plain`` = the method's loop throughput over that of the
plain method it modifies (one joint loss, or the uniform baseline), the median over the repeats of
the two measured one after the other in the same repeat (so that a drift of the machine between
cases does not enter it). The case "uniform, 3 seeds stacked" trains three seeds at once
(``mmlab.training.train_stacked``; samples/s of the three together): its ``throughput_vs_plain`` is
what stacking gains over one run at a time, its bare loop is one model's. The cases "..., CUDA graph"
(a GPU only) train with ``cuda_graph=True`` (``mmlab.training.graph``): their plain method is the same
method trained eagerly, so their ``throughput_vs_plain`` is what capturing the loop's step gains. Peak memory is the
CUDA allocator's peak on a GPU and the process's maximum resident set on a CPU.
A record with provenance is written to ``results/benchmarks/<device>.json``, after every case
(``"complete": false`` until the last: a benchmark cut short keeps the cases it measured).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mmlab import RunConfig  # noqa: E402
from mmlab.data.registry import get_dataset  # noqa: E402
from mmlab.models import build_model  # noqa: E402
from mmlab.provenance import git_commit  # noqa: E402
from mmlab.training import pick_device, train, train_stacked  # noqa: E402
from mmlab.training.batches import ResidentBatches  # noqa: E402
from mmlab.training.device import wait_for_device  # noqa: E402
from mmlab.training.loop import per_loss_encoder_gradients  # noqa: E402
from mmlab.book import device_slug, write_benchmark_record  # noqa: E402

CASES = {
    "joint": dict(method="joint"),
    "uniform": dict(method="uniform"),
    "uniform, no gradient probe": dict(method="uniform", grad_probe_every=0),
    "unimodal-gray": dict(method="unimodal", method_options={"modality": "gray"}),
    "ogm_ge": dict(method="ogm_ge"),
    "opm": dict(method="opm"),
    "pmr": dict(method="pmr"),
    "agm": dict(method="agm"),
    "mgda": dict(method="mgda"),
    "pcgrad": dict(method="pcgrad"),
    "gradnorm": dict(method="gradnorm"),
    "metabalance": dict(method="metabalance"),
    "gblending": dict(method="gblending", method_options={"super_epoch": 1}),
    "mmpareto": dict(method="mmpareto"),
    "mmtm": dict(method="mmtm"),
    "greedy": dict(method="greedy"),
    "uncertainty": dict(method="uncertainty"),
    "cggm": dict(method="cggm"),
    "mmcosine": dict(method="mmcosine"),
    "ume": dict(method="ume"),
    "umt": dict(method="umt"),
    # its second epoch re-samples (warm-up: the first): samples/s counts each training sample once, so the
    # valuation pass and the copies are what it costs over the joint loss
    "sample_valuation": dict(method="sample_valuation"),
    "inforeg": dict(method="inforeg"),
    "cml": dict(method="cml"),
    "amco": dict(method="amco"),
    "mbsd": dict(method="mbsd"),
    "lfm": dict(method="lfm"),
    "miles": dict(method="miles"),
    "mslr": dict(method="mslr"),
    # chapter 6's schedules, each beside the uniform baseline; the timed epoch is the run's last (``epochs``: how
    # many it trains): UDI's first follower epoch (its anchor trained in the first), MLA's alternating steps (one
    # optimiser step per modality and batch), D&R's training steps after a re-learning (its diagnosis runs at an
    # epoch's end, outside the timed part), and ReconBoost's two kinds of epoch, the colour learner's boosting
    # stage against the gray one (the third) and a rectification of the ensemble (the fourth)
    "udi": dict(method="udi"),
    "mla": dict(method="mla"),
    "relearning": dict(method="relearning", method_options={"relearn_every": 1}),
    "reconboost, boosting stage": dict(method="reconboost", epochs=3,
                                       method_options={"stage_epochs": 1, "rectify_epochs": 1}),
    "reconboost, rectification": dict(method="reconboost", epochs=4,
                                      method_options={"stage_epochs": 1, "rectify_epochs": 1}),
    # three seeds of the uniform baseline trained together (mmlab.training.train_stacked): samples/s
    # of the three together; its bare loop is one model's, so its ratio is the speed-up over that
    "uniform, 3 seeds stacked": dict(method="uniform", stack=3),
    # a CREMA-D-shaped epoch (ResNet-18 per modality on 257x188 spectrograms and 3 frames of
    # 224x224, random content, frames cropped on the device), in float32 and with bf16 autocast
    "cremad_shaped uniform": dict(dataset="cremad_shaped", method="uniform"),
    "cremad_shaped uniform bf16": dict(dataset="cremad_shaped", method="uniform", precision="bf16"),
    # the loop with its full-batch steps replayed from a CUDA graph (mmlab.training.graph); its plain
    # method is the same method trained eagerly, so throughput_vs_plain is what capturing gains
    "uniform, CUDA graph": dict(method="uniform", cuda_graph=True),
    "mmpareto, CUDA graph": dict(method="mmpareto", cuda_graph=True),
    "ogm_ge, CUDA graph": dict(method="ogm_ge", cuda_graph=True),
}
#: cases too slow for a CPU run by default (a ResNet-18 step on CREMA-D's shapes takes seconds there)
GPU_ONLY = {"cremad_shaped uniform", "cremad_shaped uniform bf16",
            "uniform, CUDA graph", "mmpareto, CUDA graph", "ogm_ge, CUDA graph"}
PLAIN = {"uniform, 3 seeds stacked": "uniform", "uniform, CUDA graph": "uniform",
         "mmpareto, CUDA graph": "mmpareto", "ogm_ge, CUDA graph": "ogm_ge",
         "ogm_ge": "joint", "opm": "joint", "mgda": "uniform", "pcgrad": "uniform", "gradnorm": "uniform",
         "metabalance": "uniform", "mmpareto": "uniform", "greedy": "mmtm", "pmr": "joint", "agm": "joint",
         "gblending": "uniform", "uncertainty": "uniform", "cggm": "uniform", "mmcosine": "joint", "ume": "uniform",
         "umt": "uniform", "sample_valuation": "joint",
         "inforeg": "uniform", "cml": "joint", "amco": "joint",
         "mbsd": "joint", "lfm": "joint", "miles": "uniform", "mslr": "joint",
         "udi": "uniform", "mla": "uniform", "relearning": "uniform",
         "reconboost, boosting stage": "uniform", "reconboost, rectification": "uniform"}
# The bare loop trains with the method's plain losses (fused CE, plus the unimodal CEs where the
# method has heads): for OGM-GE that is one joint loss, for MGDA, PCGrad and MMPareto the uniform
# baseline. Their ratio is therefore their cost over the plain method they modify. MMTM and Greedy
# train the model with cross-modal modules (the bare loop too); Greedy's plain method is `mmtm`.
# PMR and AGM modify the one joint loss; G-Blending (re-weighted every epoch here, so that its two
# evaluation passes per super-epoch are counted at their most frequent) the uniform baseline. Uncertainty
# weighting, CGGM, UME, UMT and InfoReg train heads, so theirs is the uniform baseline; MMCosine's, sample-level
# valuation's, CML's, AMCo's, MBSD's and LFM's (shares, no heads) the joint loss.


def _peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_loop(config: RunConfig, device, epochs: int = 2) -> float:
    """Samples/s of the plainest loop that trains the same model the same way."""
    spec = get_dataset(config.dataset)
    from mmlab.methods import build_method

    method = build_method(config.method, list(spec.modalities), **config.method_options)
    modalities = method.modalities(list(spec.modalities))
    splits = spec.load_splits(train_size=config.train_size, val_size=config.val_size,
                              test_size=config.test_size, data_seed=config.data_seed)
    data = ResidentBatches(splits["train"], modalities, config.batch_size, device, shuffle=True, seed=config.seed,
                           transform=spec.batch_transform(config.dataset_options))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    torch.manual_seed(config.seed)
    model = build_model(spec, modalities, method.needs_unimodal_heads, fusion=method.fusion).to(device)
    if spec.channels_last:
        model.use_channels_last()
    groups = model.parameter_groups()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    seconds = 0.0
    for epoch in range(epochs):
        wait_for_device(device)
        t0 = time.perf_counter()
        for inputs, labels in data.epoch(epoch):
            with autocast:
                out = model(inputs)
                loss = F.cross_entropy(out.logits, labels)
                for logits in out.unimodal_logits.values():
                    loss = loss + F.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            if method.per_loss_gradients:  # the two gradients per encoder, then simply their sum
                losses = {"multimodal": F.cross_entropy(out.logits, labels),
                          **{f"unimodal/{m}": F.cross_entropy(h, labels) for m, h in out.unimodal_logits.items()}}
                grads = per_loss_encoder_gradients(out, losses, groups)
                for p, g in zip(groups.non_encoder(), torch.autograd.grad(loss, groups.non_encoder())):
                    p.grad = g
                for m, by_loss in grads.items():
                    for p, *gs in zip(groups.encoders[m], *by_loss.values()):
                        p.grad = torch.stack(gs).sum(0)
            else:
                loss.backward()
            opt.step()
        wait_for_device(device)
        seconds = time.perf_counter() - t0  # keep the last (warm) epoch
    return data.num_samples / seconds


def loop_throughput(config: RunConfig, device, stack: int = 1, cuda_graph: bool = False) -> float:
    """Samples/s of the last (warm) training epoch of mmlab's loop (of ``stack`` seeds together;
    with ``cuda_graph``, its steps replayed from a graph captured in the first epoch)."""
    with tempfile.TemporaryDirectory() as ckpt:
        if stack == 1:
            record = train(config, device=device, checkpoint_dir=ckpt, progress=False, cuda_graph=cuda_graph)
        else:
            configs = [config.with_(seed=config.seed + k) for k in range(stack)]
            record = train_stacked(configs, device=device, checkpoint_dir=ckpt, progress=False)[0]
    return stack * config.train_size / record["history"][-1]["time/train_s"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--samples", type=int, default=None,
                        help="training samples per epoch (default: 4096 on CPU, 55000 on GPU)")
    parser.add_argument("--cases", nargs="*", default=None, choices=list(CASES),
                        help="default: every case (on a CPU, all but the CREMA-D-shaped ones)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternate loop and bare measurements this many times; report medians")
    parser.add_argument("--out", default=None)
    parser.add_argument("--note", default=None,
                        help="what the record should say about the conditions, e.g. other work on the machine")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    samples = args.samples or (55000 if device.type == "cuda" else 4096)
    cases = args.cases or [c for c in CASES if device.type == "cuda" or c not in GPU_ONLY]
    if device.type != "cuda" and any(CASES[c].get("cuda_graph") for c in cases):
        parser.error(f"the CUDA-graph cases need a CUDA device; this benchmark runs on {device}")
    rows = []
    slug = device_slug(device)
    out = Path(args.out) if args.out else REPO / "results" / "benchmarks" / f"{slug}.json"

    code_version = git_commit()  # the code this benchmark imported

    def write(complete: bool) -> None:  # after every case: a benchmark cut short keeps what it measured
        write_benchmark_record(out, device, rows, complete=complete, code_version=code_version,
                               **({"note": args.note} if args.note else {}))

    for name in cases:
        case = dict(CASES[name])
        stack = case.pop("stack", 1)
        cuda_graph = case.pop("cuda_graph", False)
        if case.get("dataset") == "cremad_shaped":  # one CREMA-D training epoch: 6,698 clips less validation
            sizes = dict(train_size=args.samples or (6028 if device.type == "cuda" else 64), val_size=64,
                         test_size=64)
        else:
            sizes = dict(train_size=samples, val_size=500, test_size=1000)
        config = RunConfig.from_profile(profile="quick", **{"epochs": 2, **sizes, **case})
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        plain_name = PLAIN.get(name)
        plain_config = (RunConfig.from_profile(profile="quick", epochs=2, **sizes, **CASES[plain_name])
                        if plain_name else None)
        loops, bares, versus = [], [], []
        for _ in range(args.repeats):  # alternate, so that drifts of the machine hit all alike
            loops.append(loop_throughput(config, device, stack, cuda_graph))
            bares.append(bare_loop(config, device))
            if plain_config is not None:  # the plain method in the same repeat: a drift-free ratio
                versus.append(loops[-1] / loop_throughput(plain_config, device))
        loop, bare = statistics.median(loops), statistics.median(bares)
        peak = _peak_memory_mb(device)
        rows.append({"case": name, "method": config.label, "dataset": config.dataset,
                     "precision": config.precision, "samples_per_epoch": config.train_size,
                     "batch_size": config.batch_size, "repeats": args.repeats, "stacked_runs": stack,
                     "cuda_graph": cuda_graph,
                     "loop_samples_per_s": round(loop, 1), "bare_samples_per_s": round(bare, 1),
                     "ratio": round(loop / bare, 3), "peak_memory_mb": round(peak, 1)})
        if versus:
            rows[-1].update(vs_plain_method=plain_name, throughput_vs_plain=round(statistics.median(versus), 3))
        print(f"{name:28s} loop {loop:9.1f}/s  bare {bare:9.1f}/s  ratio {loop / bare:.3f}  peak {peak:.0f} MB",
              flush=True)
        write(complete=False)
    write(complete=True)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
