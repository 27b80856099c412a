"""Multi-node training and evaluation under real ``torchrun`` node processes on one machine.

Two ``torchrun --nnodes 2 --nproc-per-node 1`` processes (node 0 and node 1) talk over loopback,
or in the optional variant over a veth pair between two network namespaces. They show that the
gradient all-reduce keeps the replicas identical (rank files), that rank 0's checkpoint loads,
and that a 2-node evaluation writes exactly the metrics of a 1-process one. The fast tests check
the launcher parsing, the refusals and the bookkeeping without starting processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml

from segflow.cli.main import main
from segflow.config import build_config
from segflow.distributed import launch
from segflow.distributed.launch import Topology, detect_topology, state_digest, trainer_layout
from segflow.errors import ConfigError, TrainingError
from segflow.training import engine

NODE_TIMEOUT_S = 400
"""Per launch of the two nodes; a hung rendezvous fails the test instead of blocking it."""
LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_NAME", "MASTER_ADDR", "MASTER_PORT")


def torchrun_env(world: int = 4, per_node: int = 2, rank: int = 3) -> dict[str, str]:
    """The variables ``torchrun`` gives a worker (here: 2 nodes x 2 processes, rank 3)."""
    return {
        "TORCHELASTIC_RUN_ID": "none",
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(per_node),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank % per_node),
        "GROUP_RANK": str(rank // per_node),
        "MASTER_ADDR": "10.1.2.3",
        "MASTER_PORT": "29500",
    }


# --- the launcher's environment is the one owner of the topology ------------------------------


def test_local_process_has_no_launcher() -> None:
    assert detect_topology({}) == Topology()
    assert (
        detect_topology({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}) == Topology()
    )  # Lightning's own
    assert trainer_layout(3, topology=Topology()) == (1, 3)


def test_torchrun_topology() -> None:
    t = detect_topology(torchrun_env())
    assert t == Topology(
        "torchrun", num_nodes=2, devices_per_node=2, world_size=4, rank=3, node_rank=1, local_rank=1
    )
    assert t.distributed and not t.is_main
    assert trainer_layout(1, topology=t) == (2, 2)  # the default devices: 1 follows the launcher
    assert trainer_layout(2, topology=t) == (2, 2)
    assert launch.rendezvous(torchrun_env()) == ("10.1.2.3", 29500)


def test_slurm_topology() -> None:
    env = {
        "SLURM_NTASKS": "8",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_NNODES": "2",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_JOB_ID": "4711234",
        "SLURM_NODELIST": "gpu[017-018]",
        "SLURM_JOB_NAME": "train",
    }
    assert detect_topology(env) == Topology("slurm", 2, 4, 8, rank=5, node_rank=1, local_rank=1)
    assert launch.rendezvous(env) == ("gpu017", 15000 + 1234)  # as Lightning's SLURMEnvironment
    salloc_shell = {**env, "SLURM_JOB_NAME": "interactive", "SLURM_PROCID": "0"}
    assert detect_topology(salloc_shell) == Topology()  # one process in an salloc shell
    assert detect_topology({**env, **torchrun_env()}).launcher == "torchrun"  # torchrun inside sbatch


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**torchrun_env(), "WORLD_SIZE": "3"}, "WORLD_SIZE=3 is not a multiple of LOCAL_WORLD_SIZE=2"),
        ({**torchrun_env(), "RANK": "x"}, r"\$RANK='x' is not a whole number"),
        ({k: v for k, v in torchrun_env().items() if k != "GROUP_RANK"}, r"\$GROUP_RANK is not set"),
        ({**torchrun_env(), "RANK": "4"}, "rank 4, node rank 1 or local rank 1 is out of range"),
        ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, "--ntasks=4 without --ntasks-per-node"),
        (
            {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "3", "SLURM_PROCID": "0"},
            r"3 node\(s\) x 2 process\(es\) per node is not the world size 4",
        ),
    ],
)
def test_bad_launcher_environment_is_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        detect_topology(env)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**torchrun_env(), "LOCAL_RANK": "abc"}, r"\$LOCAL_RANK='abc' is not a whole number"),
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "x", "SLURM_JOB_NAME": "job"}, r"\$SLURM_PROCID='x'"),
        ({**torchrun_env(), "MASTER_PORT": "abc"}, r"\$MASTER_PORT='abc' is not a port number"),
        ({**torchrun_env(), "MASTER_PORT": "70000"}, r"\$MASTER_PORT='70000' is not a port number"),
        (
            {"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_JOB_NAME": "interactive"},
            "srun started task 1 of 2 inside an interactive allocation",
        ),
    ],
)
def test_environment_is_checked_before_lightning_parses_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        launch.check_environment(env)
    assert "\n" not in str(err.value)
    assert (
        launch.check_environment({"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "bash"}) == Topology()
    )  # salloc shell


def test_a_rank_whose_peers_never_join_stops_with_one_line(tmp_path: Path) -> None:
    """``process_group`` gives up after its rendezvous timeout instead of waiting for hours."""
    script = tmp_path / "lonely.py"
    script.write_text(
        "from datetime import timedelta\n"
        "from segflow.distributed.launch import Topology, process_group\n"
        "t = Topology(launcher='slurm', num_nodes=1, devices_per_node=2, world_size=2)\n"
        "with process_group(t, rendezvous_timeout=timedelta(seconds=3)):\n"
        "    print('joined')\n"
    )
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "joined" not in done.stdout
    assert "joining the process group at 127.0.0.1" in done.stderr
    assert "error: not all 2 slurm processes joined at 127.0.0.1" in done.stderr
    assert "within 0.05 min (this is rank 0)" in done.stderr


def test_config_devices_that_contradict_the_launcher_are_refused() -> None:
    t = detect_topology(torchrun_env())
    with pytest.raises(ConfigError, match=r"trainer.devices=3 contradicts torchrun, which started 2 process"):
        trainer_layout(3, topology=t)
    with pytest.raises(ConfigError, match="ddp_spawn cannot run under torchrun"):
        trainer_layout(1, "ddp_spawn", topology=t)


def _launched(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in LAUNCHER_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_training_steps_use_the_launchers_world_size(
    tiny_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 images, batches of 4: 4 steps in one process, 1 per rank on 2 nodes x 2 processes."""
    tiny_config["trainer"]["batch_size"] = 4
    config = build_config(tiny_config)
    assert engine.training_steps(config, 16) == (4, 4)
    _launched(monkeypatch, torchrun_env(world=4, per_node=2, rank=0))
    assert engine.training_steps(config, 16) == (1, 1)  # trainer.devices is still 1
    _launched(monkeypatch, torchrun_env(world=2, per_node=1, rank=0))
    assert engine.training_steps(config, 16) == (2, 2)


def test_train_refuses_devices_against_the_launcher_before_any_work(
    tiny_config: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config))
    _launched(monkeypatch, torchrun_env(world=2, per_node=1, rank=0))
    assert main(["train", str(cfg), "trainer.devices=2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "error: trainer.devices=2 contradicts torchrun, which started 1 process(es) per node"
    )
    assert len(err.splitlines()) == 1
    assert not (Path(tiny_config["output_dir"]) / "tiny").exists()


# --- bookkeeping: digests, rank records, shards ------------------------------------------------


def test_state_digest_is_exact_and_order_free() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = net.state_dict()
    digest = state_digest(state)
    assert digest == state_digest(dict(reversed(list(state.items()))))
    assert len(digest) == 64
    changed = {k: v.clone() for k, v in state.items()}
    changed["1.running_mean"][0] += 1e-7  # a buffer counts as much as a weight
    assert state_digest(changed) != digest
    changed = {k: v.clone() for k, v in state.items()}
    changed["1.num_batches_tracked"] += 1  # 0-d int64
    assert state_digest(changed) != digest


def _fake_trainer(rank: int) -> Any:
    return SimpleNamespace(
        global_rank=rank,
        node_rank=rank,
        local_rank=0,
        world_size=2,
        num_nodes=2,
        global_step=7,
        is_global_zero=rank == 0,
    )


def test_diverged_replicas_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0 sees another rank's digest differ: ranks.json says so and training fails loudly."""
    net = torch.nn.Linear(2, 2)
    other = {"rank": 1, "weights_sha256": "f" * 64}
    monkeypatch.setattr(engine, "gather_objects", lambda record: [record, {**record, **other}])
    with pytest.raises(
        TrainingError,
        match=r"the 2 DDP ranks hold different weights after step 7 \(rank 0 \w{12}, rank 1 f{12}\)",
    ):
        engine.check_replicas(_fake_trainer(0), net, tmp_path)  # type: ignore[arg-type]
    summary = json.loads((tmp_path / "distributed" / "ranks.json").read_text())
    assert summary["identical"] is False and [r["rank"] for r in summary["ranks"]] == [0, 1]
    mine = json.loads((tmp_path / "distributed" / "rank-0.json").read_text())
    assert mine["state_sha256"] == mine["weights_sha256"] == state_digest(net.state_dict())  # no buffers
    assert mine["global_step"] == 7


class _Split(list[int]):
    """``len()``, ``reader`` and ``samples``: what sharding reads of an image dataset."""

    reader = SimpleNamespace(format_name="folder")

    @property
    def samples(self) -> list[int]:
        return list(self)


def test_shards_cover_the_split_once() -> None:
    from segflow.metrics.evaluate import shard_indices

    split = _Split(range(7))
    shards = [shard_indices(split, rank, 3) for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard_indices(split, 0, 1) == list(range(7))


def test_volume_entries_come_back_in_split_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank r scored volume groups r, r + W, ...; the merged list follows the split."""
    from segflow.metrics import evaluate

    parts = [[{"case": "a"}, {"case": "c"}, {"case": "e"}], [{"case": "b"}, {"case": "d"}]]
    monkeypatch.setattr(launch, "gather_objects", lambda value: parts)
    merged = evaluate._gathered_volumes(SimpleNamespace(per_volume=[]), 2)  # type: ignore[arg-type]
    assert [entry["case"] for entry in merged] == ["a", "b", "c", "d", "e"]


# --- real torchrun node processes ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", **extra)
    return env


def run_nodes(
    args: list[str],
    cwd: Path,
    master: str = "127.0.0.1",
    prefixes: tuple[list[str], list[str]] = ([], []),
    envs: tuple[dict[str, str], dict[str, str]] = ({}, {}),
) -> list[str]:
    """Runs ``segflow ARGS`` as node 0 and node 1 of a 2-node ``torchrun`` job; returns their logs.

    Each node is one ``torchrun --nnodes 2 --nproc-per-node 1`` process with its own node rank,
    as it would be started on two machines. ``prefixes`` go before each command (``ip netns
    exec NS``). Both must exit 0 within :data:`NODE_TIMEOUT_S`.
    """
    port = _free_port()
    logs, procs = [cwd / f"node{rank}.log" for rank in (0, 1)], []
    for rank in (0, 1):
        command = [
            *prefixes[rank],
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--node-rank",
            str(rank),
            "--master-addr",
            master,
            "--master-port",
            str(port),
            "-m",
            "segflow.cli.main",
            *args,
        ]
        with logs[rank].open("w") as log:
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=_child_env(**envs[rank]),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    deadline = time.monotonic() + NODE_TIMEOUT_S
    try:
        codes = [proc.wait(timeout=max(1.0, deadline - time.monotonic())) for proc in procs]
    finally:
        for proc in procs:  # our own process groups (a node's agent and its worker), nothing else
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    texts = [log.read_text(errors="replace") for log in logs]
    assert codes == [0, 0], "\n".join(f"--- node {r} ---\n{t[-3000:]}" for r, t in enumerate(texts))
    return texts


@pytest.fixture
def two_node_setup(tiny_config: dict[str, Any], tmp_path: Path) -> tuple[Path, Path, Path]:
    """(config YAML, data YAML, run folder) of a tiny run: 2 steps per rank on 2 nodes."""
    from segflow.data import create_dataset, load_data_spec

    tiny_config["data"]["options"]["num_images"]["val"] = 7  # odd: the shards differ in size
    tiny_config["trainer"]["batch_size"] = 4  # 16 images / 2 ranks / 4 = 2 steps
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump(tiny_config["data"]))
    create_dataset(load_data_spec(data), "train")  # generated once here, not by both nodes at once
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    return config, data, Path(tiny_config["output_dir"]) / "tiny"


def _rank_records(run: Path, steps: int, buffers_identical: bool) -> list[dict[str, Any]]:
    """Both ranks' records, checked: 2 nodes, ``steps`` steps, identical weights and state."""
    records = [json.loads((run / "distributed" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["node_rank"], r["local_rank"]) for r in records] == [(0, 0, 0), (1, 1, 0)]
    for record in records:
        assert record["world_size"] == 2 and record["num_nodes"] == 2 and record["launcher"] == "torchrun"
        assert record["global_step"] == steps
    assert records[0]["weights_sha256"] == records[1]["weights_sha256"]  # the all-reduce kept them equal
    assert records[0]["state_sha256"] == records[1]["state_sha256"]
    assert (records[0]["buffers_sha256"] == records[1]["buffers_sha256"]) is buffers_identical
    summary = json.loads((run / "distributed" / "ranks.json").read_text())
    assert summary == {"identical": True, "buffers_identical": buffers_identical, "ranks": records}
    return records


@pytest.mark.slow
def test_two_torchrun_nodes_train_identically_and_evaluate_exactly(
    two_node_setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from segflow.models.checkpoint import load_checkpoint

    config, data, run = two_node_setup
    run_nodes(["train", str(config)], tmp_path)
    records = _rank_records(run, steps=2, buffers_identical=True)  # validation ran last: DDP synced them
    # (1) rank 0's record is the weights it saved: last.ckpt holds the module's state_dict
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state_digest(last["state_dict"]) == records[0]["state_sha256"]
    assert last["global_step"] == 2
    # (2) rank 0's checkpoint loads as a network
    best = run / "checkpoints" / "best.ckpt"
    net, meta = load_checkpoint(best)
    assert meta.class_names[0] == "background" and not net.training
    # (3) 2-node evaluation == 1-process evaluation, byte for byte
    assert (
        main(["evaluate", str(best), "--data", str(data), "--split", "val", "--out", str(tmp_path / "one")])
        == 0
    )
    logs = run_nodes(
        ["evaluate", str(best), "--data", str(data), "--split", "val", "--out", str(tmp_path / "two")],
        tmp_path,
    )
    one = (tmp_path / "one" / "metrics.json").read_text()
    assert (tmp_path / "two" / "metrics.json").read_text() == one
    assert json.loads(one)["num_images"] == 7
    assert "mIoU" in logs[0] and "mIoU" not in logs[1]  # rank 0 reports for the job, rank 1 writes nothing
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
    assert json.loads((run / "metrics.json").read_text())["miou"] == json.loads(one)["miou"]


# --- optional: the two nodes in two network namespaces joined by a veth pair ------------------


SUBNET = "192.168.213"
"""Addresses of the veth pair; they exist only inside the two namespaces this test makes."""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def two_namespaces() -> Iterator[tuple[tuple[str, str], tuple[str, str]]]:
    """Two fresh network namespaces joined by a veth pair (``SUBNET.1`` / ``SUBNET.2``), as
    ``(namespace, veth device)`` per node; the namespaces (and so the pair) are deleted
    afterwards. Skips when they cannot be made."""
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2): network namespaces cannot be made")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
    tag = uuid.uuid4().hex[:6]
    names = (f"sfmn-{tag}-0", f"sfmn-{tag}-1")
    links = (f"sfv{tag}0", f"sfv{tag}1")  # at most 15 characters
    made: list[str] = []
    try:
        for name in names:
            done = _ip("netns", "add", name)
            if done.returncode:
                pytest.skip(f"cannot make a network namespace: {done.stderr.strip() or done.returncode}")
            made.append(name)
        steps = [
            (
                "-n",
                names[0],
                "link",
                "add",
                links[0],
                "type",
                "veth",
                "peer",
                "name",
                links[1],
                "netns",
                names[1],
            ),
            *[("-n", names[i], "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", links[i]) for i in (0, 1)],
            *[("-n", names[i], "link", "set", dev, "up") for i in (0, 1) for dev in (links[i], "lo")],
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode:
                pytest.skip(f"cannot wire the namespaces (ip {' '.join(step)}): {done.stderr.strip()}")
        yield (names[0], links[0]), (names[1], links[1])
    finally:
        for name in made:
            _ip("netns", "del", name)


@pytest.mark.slow
def test_two_nodes_in_network_namespaces_train_identically(
    two_node_setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Node 0 at SUBNET.1 and node 1 at SUBNET.2, each in its own namespace: only the veth
    pair joins them (gloo is pinned to it), as two machines on one network.

    Three epochs, validated after the second only: the last two steps leave each rank its own
    batch-norm statistics, which rank 0's replace before the state is compared.
    """
    config, _, run = two_node_setup
    with two_namespaces() as ((ns0, dev0), (ns1, dev1)):
        run_nodes(
            ["train", str(config), "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"],
            tmp_path,
            master=f"{SUBNET}.1",
            prefixes=(["ip", "netns", "exec", ns0], ["ip", "netns", "exec", ns1]),
            envs=({"GLOO_SOCKET_IFNAME": dev0}, {"GLOO_SOCKET_IFNAME": dev1}),
        )
    _rank_records(run, steps=6, buffers_identical=False)
    assert (run / "checkpoints" / "best.ckpt").is_file()
