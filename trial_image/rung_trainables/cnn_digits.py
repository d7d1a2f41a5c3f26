"""A small CNN in torch on scikit-learn's bundled digits (8x8 images), trained data-parallel
over the devices its pod gets. Needs the optional extra: pip install 'rung[torch]'.

Params: lr (0.05), channels (16), hidden (64); optional batch_size (64, the global batch),
momentum (0.9), weight_decay (0), seed (0). budget = epochs. Reports val_loss, val_accuracy
and throughput (training samples per second, all workers together) after every epoch.

Workers: RUNG_WORKERS, else WORLD_SIZE, else RUNG_GPUS (at least 1). With one, it trains in
this process. With more it spawns that many in this pod (DDP): one per GPU with nccl when
RUNG_GPUS > 0, else on CPU with gloo, meeting at MASTER_ADDR:MASTER_PORT (127.0.0.1 and a free
port unless set); rank 0 reports and checkpoints. Each worker trains on its share of every
global batch, weighted so the gradient is the global batch's mean: the same run at any worker
count, and the checkpoint (weights, momentum, epoch, shuffling RNG; on CPU) resumes at any
other count. At the same count a resumed run computes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time

from rung_trainables.mlp_digits import load_data  # first: it keeps numpy's BLAS to one thread

import numpy as np  # noqa: E402

from rung import trial  # noqa: E402
from rung.errors import InputError  # noqa: E402
from rung_trainables._params import integer, number  # noqa: E402
from rung_trainables._torch import cpu_copy  # noqa: E402

try:
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
except ImportError:  # an optional extra: main() says how to install it
    torch = None

WORKERS = "RUNG_WORKERS"  # worker processes, e.g. on CPU in tests (default: RUNG_GPUS, at least 1)


def config() -> dict:
    p = trial.params()
    c = {"lr": number(p, "lr", float, 0.05), "channels": number(p, "channels", integer, 16),
         "hidden": number(p, "hidden", integer, 64), "batch_size": number(p, "batch_size", integer, 64),
         "momentum": number(p, "momentum", float, 0.9), "weight_decay": number(p, "weight_decay", float, 0.0),
         "seed": number(p, "seed", int, 0), "epochs": math.ceil(trial.budget() - 1e-9)}
    if min(c["channels"], c["hidden"], c["batch_size"]) < 1:
        raise InputError("params channels, hidden, batch_size", "must be >= 1", "raise them")
    return c


def workers() -> int:
    for name in (WORKERS, "WORLD_SIZE"):
        raw = os.environ.get(name)
        if raw:
            n = int(raw) if raw.isdigit() else 0
            if n < 1:
                raise InputError(name, f"{raw!r} is not a whole number >= 1", f"set it like {name}=2")
            return n
    return max(trial.gpus(), 1)


def model(channels: int, hidden: int):
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * channels * 4 * 4, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def train(rank: int, world: int, c: dict) -> None:
    cuda = trial.gpus() > 0
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    else:
        torch.set_num_threads(1)  # tiny tensors: threads cost more than they give, and vary sums
    if world > 1:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_WORLD_SIZE=str(world))
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)

    # Rank 0 alone talks to the SDK; the others get its checkpoint.
    state = [trial.load_checkpoint() if rank == 0 else None]
    if world > 1:
        dist.broadcast_object_list(state, src=0)
    state = state[0]

    (xt, yt), (xv, yv) = load_data()
    x, y = (torch.tensor(xt, dtype=torch.float32, device=device).view(-1, 1, 8, 8),
            torch.tensor(yt, device=device))
    x_val, y_val = (torch.tensor(xv, dtype=torch.float32, device=device).view(-1, 1, 8, 8),
                    torch.tensor(yv, device=device))
    torch.manual_seed(c["seed"])
    net = model(c["channels"], c["hidden"]).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])
    rng = np.random.default_rng(c["seed"] + 1)
    start = 0
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])  # after .to(device): momentum follows the params
        rng.bit_generator.state, start = state["rng"], state["epoch"]
    step = DistributedDataParallel(net, device_ids=[rank] if cuda else None) if world > 1 else net

    def snapshot(epoch: int) -> dict:
        return {"epoch": epoch, "model": cpu_copy(net.state_dict()), "optimizer": cpu_copy(opt.state_dict()),
                "rng": rng.bit_generator.state}

    def report(epoch: int, **more) -> None:
        with torch.no_grad():
            logits = net(x_val)
            loss = F.cross_entropy(logits, y_val).item()
            accuracy = (logits.argmax(dim=1) == y_val).double().mean().item()
        trial.report(epoch, val_loss=loss if math.isfinite(loss) else math.inf, val_accuracy=accuracy, **more)

    epoch = start
    for epoch in range(start + 1, c["epochs"] + 1):
        order = rng.permutation(len(xt))  # the same on every rank: same RNG state
        if cuda:
            torch.cuda.synchronize()
        began = time.perf_counter()
        for i in range(0, len(order), c["batch_size"]):
            batch = order[i:i + c["batch_size"]]
            mine = torch.from_numpy(batch[rank::world]).to(device)
            # DDP averages gradients over workers: sum / global size * world makes the
            # gradient the global batch's mean, whatever each worker's share.
            loss = F.cross_entropy(step(x[mine]), y[mine], reduction="sum") * (world / len(batch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        if rank == 0:
            report(epoch, throughput=len(xt) / max(seconds, 1e-9))
            if epoch < c["epochs"] and trial.should_checkpoint(epoch):
                trial.save_checkpoint(snapshot(epoch), epoch)
    if rank == 0:
        if epoch > start:
            trial.save_checkpoint(snapshot(epoch), epoch)
        else:  # resumed at (or past) the budget: nothing trained, report where it stands
            report(start)
    if world > 1:
        # Leave together: a rank tearing gloo down while rank 0 still writes the
        # checkpoint can abort ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    c = config()  # first: the SDK then records any error in the result file
    if torch is None:
        sys.tracebacklimit = 0  # one line on stderr: no traceback for a missing install
        raise InputError("rung_trainables.cnn_digits", "needs torch, which is not installed",
                         "pip install 'rung[torch]'")
    world = workers()
    if trial.gpus() > 0 and world > torch.cuda.device_count():
        raise InputError("RUNG_GPUS", f"{world} workers but torch sees {torch.cuda.device_count()} GPUs",
                         "give the pod as many GPUs as workers, with a CUDA build of torch")
    if world == 1:
        return train(0, 1, c)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    try:
        mp.spawn(train, args=(world, c), nprocs=world)
    except mp.ProcessRaisedException as e:  # its message is the worker's whole traceback
        sys.stderr.write(f"{e}\n")
        raise RuntimeError(f"worker {e.error_index}: {str(e).strip().splitlines()[-1]}") from None


if __name__ == "__main__":
    main()
