"""Crash-safe checkpoints with everything an exact resume needs.

A checkpoint is a folder `checkpoint-<step>` holding the whole pretraining module (student, teacher, heads, loss
centres) as safetensors and the optimizer state (DDP), or both sharded with `torch.distributed.checkpoint` in `dcp/`
(FSDP/HSDP: every process writes its shards), every process's RNG states, the fp16 loss scaler's state (`scaler.pt`)
and `trainer_state.json` (step, data position, counters, the process layout that wrote it). It is written into a
temporary sibling folder and renamed when complete, so a crash while saving never damages an existing checkpoint, and
a half-written folder is never mistaken for one. Nothing is unpickled on load (`torch.load(weights_only=True)`,
safetensors).

A checkpoint resumes on another number of processes when the global micro-batch (`batch_size` × processes) and the
gradient accumulation stay the same: the weights and optimizer state are whole (DDP) or resharded by
`torch.distributed.checkpoint` (FSDP/HSDP), the sampler's position is global, and each process's RNG (drop-path,
dropout) is reseeded from (seed, step, rank) instead of restored, the one thing that cannot carry over.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Fault injection for the crash tests: "checkpoint:<step>" SIGKILLs the process halfway through writing that
# checkpoint, "step:<step>" right after that optimizer step; "sigterm:<step>" sends SIGTERM there to the process of
# rank 0 alone (a preemption notice that reached one process first); a "@rank<R>" suffix ("step:3@rank1") limits a
# SIGKILL to the process of rank R. Faults fire in the first attempt only, not in a worker group that torchrun
# restarted (it would fail again at the same point). Never set in normal use.
FAULT_ENV = "TIPS_HF_FAULT"


class CheckpointMismatch(ValueError):
    """A checkpoint that this run cannot resume exactly (another batch layout, sharding mode or stream split); the
    message says which setting to change."""


def restart_count() -> int:
    """How often torchrun (`--max-restarts`, also under `accelerate launch --max_restarts`) has restarted this worker
    group; 0 in a first attempt or outside torchrun."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)


def init_restarted_process_group() -> None:
    """In a worker group that torchrun restarted, create the default process group on a store namespace of its own.

    torchrun's agent keeps one TCPStore for the whole job (shared with the workers since PyTorch 2.5, and always
    under the static rendezvous of `accelerate launch`), so a restarted group's rendezvous can read the addresses
    its predecessors left there and wait forever on a dead process (pytorch/pytorch#135712; seen here with gloo).
    Keys under `restart_<n>/` cannot be stale. accelerate then adopts the initialised group. Does nothing in a first
    attempt, outside torchrun, or when the workers host their own store (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1)."""
    import torch.distributed as dist

    if restart_count() == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or dist.is_initialized():
        return
    from torch.distributed.constants import default_pg_timeout

    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=default_pg_timeout)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                            store=dist.PrefixStore(f"tips_hf/restart_{restart_count()}", store),
                            rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))


def maybe_fault(point: str) -> None:
    fault = os.environ.get(FAULT_ENV)
    if not fault or restart_count() > 0:
        return
    fault, _, rank = fault.partition("@rank")
    if rank and os.environ.get("RANK", "0") != rank:
        return
    if fault == point:
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "sigterm:" + point.removeprefix("step:") and os.environ.get("RANK", "0") == "0":
        os.kill(os.getpid(), signal.SIGTERM)


COMPLETE = "COMPLETE"


@dataclass
class TrainerState:
    """Counters restored on resume."""

    step: int = 0  # optimizer steps done
    micro_batches: int = 0  # micro-batches consumed per process (the data position)
    samples_seen: int = 0  # global samples consumed
    skipped_images: int = 0  # unreadable images replaced, summed over processes
    processes: int = 0  # the process layout that wrote the checkpoint (0: an older checkpoint, not recorded)
    batch_size: int = 0  # per process, per micro-batch
    gradient_accumulation_steps: int = 0
    # streaming: per process, per DataLoader worker, [pass, rows read in it, samples yielded]
    stream_positions: list[list[list[int]]] = field(default_factory=list)
    # and the same streams' datasets state there (`IterableDataset.state_dict()`, what data.stream_resume=fast loads)
    stream_states: list[list[dict | None]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors/plain types (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["state"]), py_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without duplicate storages (shared heads) as contiguous CPU tensors."""
    seen: dict[int, str] = {}
    out = {}
    for key, value in module.state_dict().items():
        pointer = value.data_ptr()
        if pointer in seen and value.numel():
            continue
        seen[pointer] = key
        out[key] = value.detach().to("cpu").contiguous()
    return out


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = CHECKPOINT_RE.match(path.name)
        if match and (path / COMPLETE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def resolve_checkpoint(output_dir: str | os.PathLike, spec: str | None, restarted: bool = False) -> Path | None:
    """`latest` → the newest complete checkpoint (None when there is none yet); a path → that checkpoint. A worker
    group that torchrun restarted (`restarted`) resumes from the newest complete checkpoint of `output_dir` whatever
    `spec` says, and from `spec` only while the run has written none."""
    if restarted and (checkpoints := list_checkpoints(output_dir)):
        return checkpoints[-1]
    if spec is None:
        return None
    if spec == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(spec)
    if not (path / COMPLETE).is_file():
        raise ValueError(f"{path} is not a complete tips-hf checkpoint (no {COMPLETE} marker).")
    return path


def save_checkpoint(
    accelerator,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    output_dir: str | os.PathLike,
    keep_last: int,
    extra: dict | None = None,
    fsdp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write `checkpoint-<step>` atomically (all processes must call it). `scaler`: the fp16 loss scaler, whose scale
    and growth tracker an exact fp16 resume needs (the same in every process: overflow is agreed over all of them)."""
    root = Path(output_dir)
    final = root / f"checkpoint-{state.step}"
    staging = root / f".checkpoint-{state.step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), staging / f"rng_state_{accelerator.process_index}.pt")
    if fsdp:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(module, optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(staging / "dcp"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if not fsdp:
            tensors = _module_tensors(accelerator.unwrap_model(module))
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(staging / "model.safetensors"))
        maybe_fault(f"checkpoint:{state.step}")
        if not fsdp:
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), staging / "scaler.pt")
        (staging / "trainer_state.json").write_text(state.to_json())
        if extra:
            (staging / "run.json").write_text(json.dumps(extra, indent=2, default=str))
        (staging / COMPLETE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        _fsync_dir(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def load_checkpoint(
    accelerator, module: torch.nn.Module, optimizer: torch.optim.Optimizer, path: str | os.PathLike,
    fsdp: bool = False, scaler: torch.amp.GradScaler | None = None, seed: int | None = None,
) -> TrainerState:
    """Restore module, optimizer, the fp16 loss scaler, this process's RNG states and the counters from a complete
    checkpoint. On another number of processes than the run that wrote it, each process's RNG is reseeded from
    (`seed`, step, rank) instead (`resume_seed`); without a `seed` a process whose RNG file is missing is refused."""
    path = Path(path)
    if fsdp != (path / "dcp").is_dir():
        written, wanted = ("fsdp/hsdp", "ddp") if (path / "dcp").is_dir() else ("ddp", "fsdp/hsdp")
        raise CheckpointMismatch(f"{path} was written with training.distributed={written}; resume it with that "
                                 f"setting, not {wanted}.")
    _load_scaler(path, scaler)
    if fsdp:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optimizer_state = get_state_dict(module, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=str(path / "dcp"))
        set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        return _load_rng_and_state(accelerator, path, seed)
    unwrapped = accelerator.unwrap_model(module)
    tensors = load_file(str(path / "model.safetensors"))
    missing, unexpected = unwrapped.load_state_dict(tensors, strict=False)
    shared = {k for k in missing if _is_shared(unwrapped, k, tensors)}
    if set(missing) - shared or unexpected:
        raise ValueError(
            f"{path}: checkpoint does not match the model (missing {sorted(set(missing) - shared)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}); was it written with another configuration?"
        )
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    return _load_rng_and_state(accelerator, path, seed)


def _load_scaler(path: Path, scaler: torch.amp.GradScaler | None) -> None:
    """The fp16 loss scale and growth tracker; a checkpoint of a bf16/float32 run (no `scaler.pt`) starts the scaler
    afresh, a non-fp16 run ignores a saved one."""
    if scaler is None:
        return
    file = path / "scaler.pt"
    if file.is_file():
        scaler.load_state_dict(torch.load(file, weights_only=True))
    else:
        logging.getLogger("tips_hf.pretraining").warning(
            "%s holds no fp16 loss-scaler state (written without fp16): the scale starts at %g.", path,
            scaler.get_scale())


def resume_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of process `rank` resuming at `step` on another number of processes than the run that wrote the
    checkpoint: a function of the run, not of the layout that wrote it (the same for any N → M resize)."""
    return (seed * 1_000_003 + step) * 1_009 + rank


def _load_rng_and_state(accelerator, path: Path, seed: int | None = None) -> TrainerState:
    state = TrainerState(**json.loads((path / "trainer_state.json").read_text()))
    written = state.processes or len(list(path.glob("rng_state_*.pt")))
    rank = accelerator.process_index
    if written == accelerator.num_processes or seed is None:
        rng_file = path / f"rng_state_{rank}.pt"
        if not rng_file.is_file():
            raise CheckpointMismatch(f"{path}: no RNG state for process {rank}; resume with as many processes as the "
                                     "run that wrote it.")
        set_rng_state(torch.load(rng_file, weights_only=True))
    else:
        # N → M processes: process r's drop-path/dropout stream cannot continue any saved one (each saved stream
        # drew for other samples); reseed from (seed, step, rank). Data order, views and masks do not use it.
        from accelerate.utils import set_seed

        set_seed(resume_seed(seed, state.step, rank))
        if rank == 0:
            logging.getLogger("tips_hf.pretraining").warning(
                "%s was written by %d process(es), resumed on %d: same weights, optimizer state, data order, views "
                "and masks; each process's drop-path/dropout RNG is reseeded from (seed, step, rank).", path, written,
                accelerator.num_processes)
    return state


def _is_shared(module: torch.nn.Module, key: str, saved: dict[str, torch.Tensor]) -> bool:
    """A key left out on save because its storage is shared with a saved one (e.g. shared CLS/patch heads)."""
    state = module.state_dict()
    pointer = state[key].data_ptr()
    return any(state[other].data_ptr() == pointer for other in saved if other in state and other != key)


def load_module_state(
    module: torch.nn.Module, path: str | os.PathLike, exclude: tuple[str, ...] = ("student.",)
) -> list[str]:
    """Load every tensor of a checkpoint's module except those under `exclude` (the student, which the caller
    initialises otherwise); shapes must match. Returns the keys loaded."""
    path = Path(path)
    file = path / "model.safetensors"
    if not (path / COMPLETE).is_file() or not (file.is_file() or (path / "dcp").is_dir()):
        raise ValueError(f"{path} is not a complete tips-hf checkpoint (checkpoint-<step> folder with {COMPLETE}).")
    own = module.state_dict()
    if file.is_file():
        tensors = {k: v for k, v in load_file(str(file)).items() if not k.startswith(exclude)}
    else:  # an FSDP checkpoint: read the wanted tensors of the sharded model state (every process, before sharding)
        tensors = _read_dcp_tensors(path / "dcp", {k: v for k, v in own.items() if not k.startswith(exclude)})
    unexpected = sorted(k for k in tensors if k not in own)
    mismatched = sorted(
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and own[k].shape != v.shape
    )
    missing = sorted(
        k for k in own if not k.startswith(exclude) and k not in tensors and not _is_shared(module, k, tensors)
    )
    if unexpected or mismatched or missing:
        raise ValueError(
            f"{path}: its heads do not fit this run (unexpected {unexpected[:3]}, wrong shape {mismatched[:3]}, "
            f"missing {missing[:3]}); check objective.head_* and the recipe against the run that wrote it."
        )
    module.load_state_dict(tensors, strict=False)
    return sorted(tensors)


def _read_dcp_tensors(folder: Path, wanted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full tensors of `wanted`'s keys (present in the checkpoint) from a `torch.distributed.checkpoint` folder, read
    without a process group."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    metadata = FileSystemReader(str(folder)).read_metadata()
    present = {key.removeprefix("model.") for key in metadata.state_dict_metadata if key.startswith("model.")}
    state = {"model": {k: torch.empty_like(v, device="cpu") for k, v in wanted.items() if k in present}}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, checkpoint_id=str(folder), no_dist=True)
    return state["model"]


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to `step` (a resumed run logs the later steps again; a fresh run starts empty)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and step > 0 and json.loads(line).get("step", 0) <= step
            and json.loads(line).get("event") != "end"]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def stop_notice(number: int, step: int) -> tuple[dict[str, Any], str]:
    """The metrics record and the console message of a run that a signal stopped after `step`."""
    name = signal.Signals(number).name
    return ({"event": "stopped", "step": step, "signal": name},
            f"{name} received: stopped after step {step} with checkpoint-{step}; resume with "
            "training.resume_from_checkpoint=latest")


class StopSignals:
    """Turns SIGTERM / SIGUSR1 into a request to stop at the next step boundary (handlers restored by `close`).

    A cluster gives notice before it kills a job (SLURM: SIGTERM, then SIGKILL after KillWait; `--signal=USR1@120`
    earlier; torchrun forwards SIGTERM to its workers): finishing the step in progress and checkpointing it keeps the
    work since the last `save_steps` checkpoint, where the SIGKILL would lose it."""

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self, enabled: bool, num_processes: int):
        self.received: int | None = None
        self.previous = {}
        self.group = None
        if not enabled or threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self.previous[number] = signal.signal(number, self._handle)
        if num_processes > 1:
            import torch.distributed as dist

            # the flag travels on the CPU (gloo): an all-reduce on the GPU would make every step wait for the GPU
            self.group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def _handle(self, number, frame) -> None:
        self.received = number

    def agreed(self) -> int | None:
        """The signal, once any process got one (every process must stop at the same step: checkpoints are
        collective). One scalar all-reduce on the CPU per step when there are several processes."""
        if self.group is None:
            return self.received
        import torch.distributed as dist

        flag = torch.tensor([self.received or 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return int(flag) or None

    def close(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}
