"""Does the loop's captured step train as the eager one does, on this GPU? A check to run first.

    python scripts/check_cuda_graph.py --out check.json              # a CUDA device; ~1 minute
    python scripts/check_cuda_graph.py --device cpu --emulate        # the script itself, on a CPU

For each capturable method named (default: uniform, mmpareto, ogm_ge, opm -- one plain, one with
per-loss gradients, two with random draws), and for ``--stack-method`` with ``--stack`` seeds trained
together (as ``sweep --stack`` does), trains the same small CG-MNIST run twice, eagerly and with
``cuda_graph=True`` (mmlab.training.graph), and compares them. What the full sweep meets is met here:
OGM-GE's and OPM's window ends after the first epoch, so their second phase is captured too; the
training set (8,200) leaves a smaller last batch, trained eagerly between replays. On a GPU the two
runs are not bit-identical (cuDNN's autotuned kernels and atomic additions differ from run to run), so
the check is loose but would catch a graph that replays stale inputs, frozen values or no update:
steps were replayed, no capture failed, a method with phases captured both, every loss is finite,
every epoch's training loss agrees to ``--loss-rtol``, and the final test accuracies -- fused and of
each modality (the unimodal heads, far from chance) -- to ``--acc-atol``. Exit status 0 if every
check passes, 1 otherwise; the comparison (with provenance) goes to ``--out`` as JSON.
``scripts/gpu_session.sh`` runs it before a sweep and trains eagerly if it fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mmlab import RunConfig  # noqa: E402
from mmlab.io import atomic_write_bytes  # noqa: E402
from mmlab.methods import METHODS, Method  # noqa: E402
from mmlab.provenance import git_commit  # noqa: E402
from mmlab.training import pick_device, train, train_stacked  # noqa: E402
from mmlab.training.device import describe_device  # noqa: E402
from mmlab.training.graph import EmulatedGraphs  # noqa: E402


def has_phases(method: str) -> bool:
    """Whether ``method`` names phases of its training (``capture_key``: OGM-GE, OPM): one graph per phase."""
    return METHODS[method].capture_key is not Method.capture_key


def compare(method: str, device, *, train_size: int, epochs: int, emulate: bool, loss_rtol: float,
            acc_atol: float, stack: int = 1) -> dict:
    """Train ``method`` eagerly and captured (``stack`` seeds together, as ``sweep --stack`` does, when
    above 1: the first seed's records are compared); return the comparison and whether it passes."""
    phased = has_phases(method) and epochs >= 2
    config = RunConfig.from_profile(profile="quick", method=method, train_size=train_size, val_size=500,
                                    test_size=1000, epochs=epochs, seed=0,
                                    method_options={"window_end": 1} if phased else None)

    def run(folder: Path, cuda_graph):
        if stack == 1:
            return train(config, device=device, checkpoint_dir=folder, progress=False, cuda_graph=cuda_graph)
        configs = [config.with_(seed=seed) for seed in range(stack)]
        return train_stacked(configs, device=device, checkpoint_dir=folder, progress=False, cuda_graph=cuda_graph)[0]

    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        eager = run(Path(folder) / "eager", False)
        t1 = time.perf_counter()
        captured = run(Path(folder) / "graph", EmulatedGraphs() if emulate else True)
        t2 = time.perf_counter()
    losses = {"eager": [h["train/loss"] for h in eager["history"]],
              "graph": [h["train/loss"] for h in captured["history"]]}
    accuracies = {key: {"eager": eager["final"][key], "graph": captured["final"].get(key, math.nan)}
                  for key in eager["final"] if key.startswith("test/acc")}  # fused, and each modality's
    graph = captured["provenance"].get("cuda_graph", {})
    replayed = graph.get("replayed_steps", 0)
    checks = {
        "steps replayed": replayed > 0,
        "no capture failed": "failure" not in graph,
        "losses finite": all(math.isfinite(v) for v in losses["graph"]),
        f"every epoch's training loss within rtol {loss_rtol}": len(losses["eager"]) == len(losses["graph"]) and all(
            math.isclose(e, c, rel_tol=loss_rtol) for e, c in zip(losses["eager"], losses["graph"])),
        f"final test accuracies within {acc_atol}": all(abs(a["eager"] - a["graph"]) <= acc_atol
                                                         for a in accuracies.values()),
    }
    if phased:
        checks["both phases captured"] = graph.get("graphs", 0) == 2
    return {"method": method if stack == 1 else f"{method}, {stack} seeds stacked", "train_size": train_size,
            "epochs": epochs, "replayed_steps": replayed, "graphs": graph.get("graphs", 0),
            "failure": graph.get("failure"), "train_loss": losses, "final_test_acc": accuracies,
            "train_s": {"eager": sum(h["time/train_s"] for h in eager["history"]),
                        "graph": sum(h["time/train_s"] for h in captured["history"])},
            "wall_s": {"eager": round(t1 - t0, 2), "graph": round(t2 - t1, 2)},
            "checks": checks, "passed": all(checks.values())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--methods", nargs="+", default=["uniform", "mmpareto", "ogm_ge", "opm"])
    parser.add_argument("--train-size", type=int, default=8200,
                        help="not a multiple of the batch (64): the smaller last batch trains eagerly between replays")
    parser.add_argument("--epochs", type=int, default=2,
                        help="from 2, OGM-GE's and OPM's window ends after the first: both phases are captured")
    parser.add_argument("--loss-rtol", type=float, default=1e-2)
    parser.add_argument("--acc-atol", type=float, default=0.05)
    parser.add_argument("--stack", type=int, default=3,
                        help="also check --stack-method with this many seeds trained together (sweep --stack); "
                        "1: no such check")
    parser.add_argument("--stack-method", default="mmpareto",
                        help="the method of the stacked check (default mmpareto: per-loss gradients of stacked encoders)")
    parser.add_argument("--emulate", action="store_true",
                        help="EmulatedGraphs instead of CUDA graphs: tries the script out on a CPU")
    parser.add_argument("--out", default=None, help="where to write the comparison (JSON)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if device.type != "cuda" and not args.emulate:
        parser.error(f"CUDA graphs need a CUDA device, this is {device}; --emulate tries the script on a CPU")
    commit, dirty = git_commit()
    results = []
    checks = [(method, 1) for method in args.methods] + ([(args.stack_method, args.stack)] if args.stack > 1 else [])
    for method, stack in checks:
        result = compare(method, device, train_size=args.train_size, epochs=args.epochs, emulate=args.emulate,
                         loss_rtol=args.loss_rtol, acc_atol=args.acc_atol, stack=stack)
        results.append(result)
        method = result["method"]
        failed = [name for name, ok in result["checks"].items() if not ok]
        print(f"{method:28s} {'passed' if result['passed'] else 'FAILED: ' + ', '.join(failed)}  "
              f"test acc eager {result['final_test_acc']['test/acc']['eager']:.4f} "
              f"graph {result['final_test_acc']['test/acc']['graph']:.4f}  "
              f"train s eager {result['train_s']['eager']:.1f} graph {result['train_s']['graph']:.1f}  "
              f"({result['replayed_steps']} steps replayed)", flush=True)
    passed = all(r["passed"] for r in results)
    if args.out:
        import torch

        record = {"device": describe_device(device), "torch_version": torch.__version__, "git_commit": commit,
                  "git_dirty": dirty, "emulated": args.emulate,
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "passed": passed,
                  "methods": results}
        atomic_write_bytes(Path(args.out), (json.dumps(record, indent=1) + "\n").encode())
    print("CUDA-graph check " + ("passed" if passed else "FAILED"))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
