"""GPU check and figures: the embedded cluster on a CUDA machine, and sharing on the GPU.

Run on a machine with at least one CUDA device (the project's CI has none; a session lent a GPU
machine runs it there, see README "GPU"). It writes one JSON object of figures and prints it:

- ``sockets``: every listening TCP socket of this process and of the workers that
  ``hd.cluster.local()`` started (scheduler, dashboard, workers, nannies), and whether all of
  them are on loopback (issue 12: a GPU machine without dask_cuda once listened on the host's
  address);
- ``cluster``: workers, the devices they see (``CUDA_VISIBLE_DEVICES`` of each), their
  resources;
- ``sharing``: a small digits grid trained on the GPU with sharing and trial by trial on the
  same cluster: steps, wall-clock seconds, and whether every trial's metrics are bit-identical
  (CUDA in deterministic mode).

    python benchmarks/gpu.py [--steps 120] [--out gpu.json]

It exits non-zero when a socket is not on loopback or a shared trial differs from the trial
alone, so a device run fails loudly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Deterministic cuBLAS (DigitsTrainer on "cuda"); set before the workers start, they inherit it.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import psutil  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hippo_dask as hd  # noqa: E402
from hippo_dask import seq  # noqa: E402
from hippo_dask.testing.digits import DigitsTrainer, digits_data  # noqa: E402

LOOPBACK = ("127.", "::1")


def listening(pids: list[int]) -> list[dict[str, Any]]:
    """Listening TCP sockets of the processes ``pids``: pid, process name, address, port."""
    found = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            connections = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN:
                found.append(
                    {
                        "pid": pid,
                        "name": process.name(),
                        "host": conn.laddr.ip,
                        "port": conn.laddr.port,
                    }
                )
    return found


def warm_data(device: str) -> None:
    """Load the digits onto ``device`` in this worker (returns nothing: CUDA tensors do not
    travel back to the client)."""
    digits_data(device)


def space(device: str) -> hd.GridSpace:
    """12 trials whose learning-rate and batch-size schedules share prefixes (merge rate ~2)."""
    return hd.GridSpace(
        lr=[
            seq.StepLR(0.1, gamma=0.1, milestones=[40]),
            seq.StepLR(0.1, gamma=0.1, milestones=[80]),
            seq.Constant(0.05),
        ],
        batch_size=[seq.Constant(64), seq.MultiStep([64, 128], milestones=[60])],
        optimizer=["sgd_momentum", "adam"],
        device=[device],
    )


def study_run(client: Any, device: str, steps: int, sharing: bool) -> tuple[float, hd.Result]:
    with tempfile.TemporaryDirectory() as storage:
        study = hd.Study(
            "gpu-digits", DigitsTrainer, storage=storage, client=client, sharing=sharing
        )
        began = time.perf_counter()
        result = study.tune(hd.tuners.Grid(space(device), metric="val_acc", steps=steps))
        return time.perf_counter() - began, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.py: no CUDA device here; run it on a GPU machine", file=sys.stderr)
        return 2
    figures: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
        "devices": hd.cluster.cuda_devices(),
    }
    began = time.perf_counter()
    with hd.cluster.local(**({} if args.device == "cuda" else {"n_workers": 2})) as client:
        figures["cluster_start_s"] = round(time.perf_counter() - began, 2)
        info = client.scheduler_info()
        figures["scheduler"] = info["address"]
        workers = client.run(
            lambda: (os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count())
        )
        figures["cluster"] = {
            address: {
                "cuda_visible_devices": visible,
                "cuda_devices": count,
                "resources": info["workers"][address].get("resources"),
            }
            for address, (_, visible, count) in workers.items()
        }
        me = psutil.Process()
        pids = [me.pid] + [p.pid for p in me.children(recursive=True)]
        sockets = listening(pids)
        figures["sockets"] = sockets
        figures["sockets_all_loopback"] = bool(sockets) and all(
            s["host"].startswith(LOOPBACK) for s in sockets
        )

        client.run(warm_data, args.device)  # the data on every GPU, CUDA contexts made
        study_run(client, args.device, 2, sharing=False)  # warm: imports, kernels, first steps
        shared_s, shared = study_run(client, args.device, args.steps, sharing=True)
        alone_s, alone = study_run(client, args.device, args.steps, sharing=False)
    by_id_shared = {t.trial.id: t.metrics for t in shared.records}
    by_id_alone = {t.trial.id: t.metrics for t in alone.records}
    identical = by_id_shared == by_id_alone
    figures["sharing"] = {
        "trials": len(by_id_shared),
        "steps_requested": shared.stats.requested_steps,
        "steps_unique": shared.stats.unique_steps,
        "steps_executed_shared": shared.stats.executed_steps,
        "steps_executed_alone": alone.stats.executed_steps,
        "wall_s_shared": round(shared_s, 2),
        "wall_s_alone": round(alone_s, 2),
        "speedup": round(alone_s / shared_s, 3),
        "metrics_bit_identical": identical,
        "best": None
        if shared.best is None
        else {"config": shared.best.config, "metrics": shared.best.metrics},
    }
    text = json.dumps(figures, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if figures["sockets_all_loopback"] and identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
