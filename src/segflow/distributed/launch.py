"""The one reader of a launcher's topology: how many nodes, processes per node, which rank.

``segflow train`` and ``segflow evaluate`` run unchanged under ``torchrun`` or SLURM's ``srun``;
the launcher's environment is the only place the node count and the ranks come from (no config
key repeats them). Detection follows Lightning's own order, so segflow and the Lightning trainer
always agree on the launcher:

1. ``torchrun`` (torchelastic): ``TORCHELASTIC_RUN_ID`` is set (what
   ``torch.distributed.is_torchelastic_launched`` tests). Reads ``WORLD_SIZE``,
   ``LOCAL_WORLD_SIZE`` (processes on this node), ``RANK``, ``LOCAL_RANK`` and ``GROUP_RANK``
   (the node rank); nodes = ``WORLD_SIZE / LOCAL_WORLD_SIZE``.
2. SLURM: ``SLURM_NTASKS`` is set and the job is not named ``bash`` or ``interactive``
   (Lightning's interactive mode). Reads ``SLURM_NTASKS`` (world size), ``SLURM_NNODES``,
   ``SLURM_NTASKS_PER_NODE``, ``SLURM_PROCID``, ``SLURM_LOCALID`` and ``SLURM_NODEID``.
3. Otherwise a local run: one process, rank 0 (Lightning may still start ``trainer.devices``
   processes on this machine itself).

Heavy imports (torch) stay inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from segflow.errors import ConfigError

if TYPE_CHECKING:
    import torch

Launcher = Literal["local", "torchrun", "slurm"]
SLURM_INTERACTIVE_JOB_NAMES = ("bash", "interactive")
"""SLURM job names Lightning treats as an interactive shell, not as a launcher."""
SLURM_PORT_BASE = 15000
"""Lightning's SLURM rendezvous port: this plus the last four digits of ``SLURM_JOB_ID``."""
DEFAULT_PORT = 12910
"""Lightning's rendezvous port when neither ``MASTER_PORT`` nor a SLURM job id gives one."""
DEFAULT_TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for the slowest rank (torch's default for gloo)."""
RENDEZVOUS_TIMEOUT = timedelta(minutes=10)
"""How long :func:`process_group` waits for every rank to join before it gives up with one line."""
RANK_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "NODE_RANK",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_NTASKS",
    "SLURM_NNODES",
    "JSM_NAMESPACE_RANK",
)
"""Launcher variables Lightning and torchmetrics parse as integers when they are imported."""
MAX_PORT = 65535


@dataclass(frozen=True)
class Topology:
    """Where this process sits in a launched job.

    Attributes:
        launcher: ``torchrun``, ``slurm`` or ``local`` (no launcher: one process).
        num_nodes: Machines in the job (Lightning's ``num_nodes``).
        devices_per_node: Processes per machine, one device each (Lightning's ``devices``).
        world_size: All processes, ``num_nodes * devices_per_node``.
        rank: This process's global rank, ``0 .. world_size - 1``.
        node_rank: This machine's rank, ``0 .. num_nodes - 1``.
        local_rank: This process's rank on its machine, ``0 .. devices_per_node - 1``.
    """

    launcher: Launcher = "local"
    num_nodes: int = 1
    devices_per_node: int = 1
    world_size: int = 1
    rank: int = 0
    node_rank: int = 0
    local_rank: int = 0

    @property
    def launched(self) -> bool:
        """Whether a launcher (``torchrun`` or ``srun``) started this process."""
        return self.launcher != "local"

    @property
    def distributed(self) -> bool:
        """Whether this process is one of several (``world_size > 1``)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is global rank 0, the one process that writes shared outputs."""
        return self.rank == 0

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def _int(env: Mapping[str, str], key: str, launcher: str) -> int:
    """``env[key]`` as a non-negative int, or one ConfigError line naming the variable."""
    value = env.get(key)
    if value is None:
        raise ConfigError(f"{launcher} started this process but ${key} is not set; start it with {launcher}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"${key}={value!r} is not a whole number; it is set by {launcher}") from None
    if number < 0:
        raise ConfigError(f"${key}={value!r} is negative; it is set by {launcher}")
    return number


def _checked(topology: Topology, source: str) -> Topology:
    """``topology`` when its numbers are consistent, else one ConfigError line."""
    t = topology
    if t.num_nodes < 1 or t.devices_per_node < 1 or t.num_nodes * t.devices_per_node != t.world_size:
        raise ConfigError(
            f"{source}: {t.num_nodes} node(s) x {t.devices_per_node} process(es) per node is not the world "
            f"size {t.world_size}; segflow needs the same number of processes on every node"
        )
    if not (t.rank < t.world_size and t.node_rank < t.num_nodes and t.local_rank < t.devices_per_node):
        raise ConfigError(
            f"{source}: rank {t.rank}, node rank {t.node_rank} or local rank {t.local_rank} is out of range "
            f"for {t.world_size} process(es) on {t.num_nodes} node(s)"
        )
    return t


def _torchrun(env: Mapping[str, str]) -> Topology:
    world = _int(env, "WORLD_SIZE", "torchrun")
    local_world = _int(env, "LOCAL_WORLD_SIZE", "torchrun")
    if local_world < 1 or world % local_world:
        raise ConfigError(
            f"torchrun: WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local_world}; pass the "
            "same --nproc-per-node on every node"
        )
    topology = Topology(
        launcher="torchrun",
        num_nodes=world // local_world,
        devices_per_node=local_world,
        world_size=world,
        rank=_int(env, "RANK", "torchrun"),
        node_rank=_int(env, "GROUP_RANK", "torchrun"),
        local_rank=_int(env, "LOCAL_RANK", "torchrun"),
    )
    return _checked(topology, "torchrun")


def _slurm(env: Mapping[str, str]) -> Topology:
    world = _int(env, "SLURM_NTASKS", "srun")
    if world > 1 and "SLURM_NTASKS_PER_NODE" not in env:  # Lightning refuses this too
        raise ConfigError(
            f"srun: --ntasks={world} without --ntasks-per-node; give sbatch/srun --ntasks-per-node "
            "(one task per device) and --nodes instead"
        )
    per_node = _int(env, "SLURM_NTASKS_PER_NODE", "srun") if world > 1 else 1
    nodes = _int(env, "SLURM_NNODES", "srun") if "SLURM_NNODES" in env else 1
    topology = Topology(
        launcher="slurm",
        num_nodes=nodes,
        devices_per_node=per_node,
        world_size=world,
        rank=_int(env, "SLURM_PROCID", "srun"),
        node_rank=_int(env, "SLURM_NODEID", "srun") if "SLURM_NODEID" in env else 0,
        local_rank=_int(env, "SLURM_LOCALID", "srun") if "SLURM_LOCALID" in env else 0,
    )
    return _checked(topology, "srun")


def detect_topology(environ: Mapping[str, str] | None = None) -> Topology:
    """This process's place in a ``torchrun`` or SLURM job, from the launcher's environment.

    Args:
        environ: The environment to read (None: ``os.environ``).

    Returns:
        The topology; a local ``Topology()`` (one process) when no launcher started it.

    Raises:
        ConfigError: The launcher's variables are missing, not numbers, or inconsistent (for
            example a different number of processes on different nodes).
    """
    env = os.environ if environ is None else environ
    if env.get("TORCHELASTIC_RUN_ID") is not None:  # torchrun first, as Lightning (it may run inside SLURM)
        return _torchrun(env)
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in SLURM_INTERACTIVE_JOB_NAMES:
        return _slurm(env)
    if "SLURM_NTASKS" in env and env.get("SLURM_PROCID", "0") != "0":
        raise ConfigError(
            f"srun started task {env.get('SLURM_PROCID')} of {env.get('SLURM_NTASKS')} inside an interactive "
            f"allocation (job name {env.get('SLURM_JOB_NAME')!r}), where Lightning does not treat srun as a "
            "launcher and every task would train alone into the same run folder; submit the job with sbatch "
            "(any other job name), or run a single task (srun --ntasks 1)"
        )
    return Topology()


def check_environment(environ: Mapping[str, str] | None = None) -> Topology:
    """Checks the launcher's variables before anything parses them (Lightning and torchmetrics
    read ``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID`` ... as integers when imported and would fail
    with a traceback) and returns the topology. ``segflow train`` and ``segflow evaluate`` call it
    first.

    Raises:
        ConfigError: A launcher variable that is not a whole number, a ``MASTER_PORT`` outside
            1..65535, or an inconsistent topology (:func:`detect_topology`).
    """
    env = os.environ if environ is None else environ
    for key in RANK_VARIABLES:
        value = env.get(key)
        if value is not None and not value.strip().isdigit():
            raise ConfigError(
                f"${key}={value!r} is not a whole number; it is set by the launcher (torchrun, srun): "
                "unset it or start the command with the launcher"
            )
    port = env.get("MASTER_PORT")
    if port is not None and not (port.strip().isdigit() and 1 <= int(port) <= MAX_PORT):
        raise ConfigError(f"$MASTER_PORT={port!r} is not a port number (1-{MAX_PORT}); set a free TCP port")
    return detect_topology(env)


def trainer_layout(devices: int, strategy: str = "auto", topology: Topology | None = None) -> tuple[int, int]:
    """``(num_nodes, devices per node)`` for the Lightning trainer.

    Under a launcher both come from it; the config's ``trainer.devices`` may stay at its default 1
    or repeat the launcher's processes per node, anything else is refused. Without a launcher the
    run has one node and ``trainer.devices`` processes (Lightning starts them itself).

    Args:
        devices: ``trainer.devices`` from the config.
        strategy: ``trainer.strategy`` from the config.
        topology: The launcher's topology (None: :func:`detect_topology`).

    Raises:
        ConfigError: ``trainer.devices`` contradicts the launcher, or ``ddp_spawn`` is asked for
            under a launcher (which has already started the processes).
    """
    t = detect_topology() if topology is None else topology
    if not t.launched:
        return 1, devices
    if devices not in (1, t.devices_per_node):
        raise ConfigError(
            f"trainer.devices={devices} contradicts {t.launcher}, which started {t.devices_per_node} "
            f"process(es) per node on {t.num_nodes} node(s); the launcher sets the devices: drop "
            "trainer.devices from the config"
        )
    if strategy == "ddp_spawn":
        raise ConfigError(
            f"trainer.strategy=ddp_spawn cannot run under {t.launcher}, which has started the processes "
            "already; use trainer.strategy=ddp or auto"
        )
    return t.num_nodes, t.devices_per_node


def rendezvous(environ: Mapping[str, str] | None = None) -> tuple[str, int]:
    """The ``(address, port)`` of rank 0's store, as Lightning finds it.

    ``MASTER_ADDR``/``MASTER_PORT`` when set (``torchrun`` sets both); under SLURM the first host
    of ``SLURM_NODELIST`` and ``15000`` plus the last four digits of ``SLURM_JOB_ID``; else
    ``127.0.0.1:12910``.
    """
    env = os.environ if environ is None else environ
    address = env.get("MASTER_ADDR")
    if address is None:
        from lightning.fabric.plugins.environments import SLURMEnvironment

        address = SLURMEnvironment.resolve_root_node_address(env.get("SLURM_NODELIST", "127.0.0.1"))
    if "MASTER_PORT" in env:
        return address, int(env["MASTER_PORT"])
    job = env.get("SLURM_JOB_ID", "")[-4:]
    return address, (SLURM_PORT_BASE + int(job)) if job.isdigit() else DEFAULT_PORT


@contextmanager
def process_group(
    topology: Topology,
    backend: str = "gloo",
    timeout: timedelta = DEFAULT_TIMEOUT,
    rendezvous_timeout: timedelta = RENDEZVOUS_TIMEOUT,
) -> Iterator[None]:
    """A ``torch.distributed`` process group for a multi-process job outside Lightning.

    Initialises the default group from the launcher's topology and :func:`rendezvous` when
    ``topology.distributed`` and no group exists yet, and destroys it on exit; otherwise (one
    process, or a group already set up, e.g. by Lightning) it does nothing. Joining prints one
    line on stderr; a rank still waiting for the others after ``rendezvous_timeout`` (a job
    started without all its processes, such as ``segflow evaluate`` in an sbatch script without
    ``srun``) stops with one ``error:`` line and exit status 1 instead of waiting for hours.

    Args:
        topology: From :func:`detect_topology`.
        backend: ``gloo`` (CPU tensors, any machine) or ``nccl`` (CUDA tensors).
        timeout: How long a collective waits for the slowest rank.
        rendezvous_timeout: How long joining waits for every rank.
    """
    import torch.distributed as dist

    if not topology.distributed or dist.is_initialized():
        yield
        return
    address, port = rendezvous()
    print(
        f"{topology.launcher} rank {topology.rank} of {topology.world_size}: joining the process group at "
        f"{address}:{port} (waits up to {rendezvous_timeout.total_seconds() / 60:g} min for every rank)",
        file=sys.stderr,
        flush=True,
    )
    watchdog = threading.Timer(
        rendezvous_timeout.total_seconds(), _give_up, (topology, address, port, rendezvous_timeout)
    )
    watchdog.daemon = True
    watchdog.start()
    try:
        dist.init_process_group(
            backend,
            init_method=f"tcp://{address}:{port}",
            rank=topology.rank,
            world_size=topology.world_size,
            timeout=timeout,
        )
    finally:
        watchdog.cancel()
    try:
        yield
    finally:
        dist.destroy_process_group()


def _give_up(topology: Topology, address: str, port: int, waited: timedelta) -> None:
    """Ends a process whose ranks never all joined (called by :func:`process_group`'s watchdog)."""
    print(
        f"error: not all {topology.world_size} {topology.launcher} processes joined at {address}:{port} "
        f"within {waited.total_seconds() / 60:g} min (this is rank {topology.rank}); start every "
        "rank with the launcher (srun inside the sbatch script, or torchrun on every node)",
        file=sys.stderr,
        flush=True,
    )
    os._exit(1)


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a ``state_dict`` (weights and buffers), independent of key order.

    Each entry in sorted key order adds its name, dtype, shape and raw little-endian bytes (CPU,
    contiguous), so two states hash equal exactly when every tensor is bit for bit equal.

    Args:
        state: ``module.state_dict()``; values are tensors (others are skipped).

    Returns:
        The hex digest.
    """
    import torch

    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if not isinstance(value, torch.Tensor):
            continue
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{tensor.dtype}|{tuple(value.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sync_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copies rank ``src``'s buffers (e.g. batch-norm running statistics) to every rank, as DDP
    does at the start of each forward pass; nothing without a process group.

    Every rank of the default group must call it. Under ``nccl`` the buffers travel through this
    rank's current CUDA device and are copied back to where they live.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    for buffer in module.buffers():
        staged = buffer.detach().to(device)
        dist.broadcast(staged, src)
        buffer.data.copy_(staged)


def gather_objects(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (``[value]`` without a process group).

    Every rank of the default group must call it; the values travel pickled.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
