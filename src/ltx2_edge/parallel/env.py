"""The environment every rank runs in: NVLink multicast off, and torchrun's rendezvous variables.

NVLS (NCCL's NVLink SHARP), symmetric-memory multicast and NVSHMEM's NVLS all create NVLink multicast objects; on
shared multi-GPU hosts a program that uses them can put the host's GPUs out of service for everyone, so they stay
off (issue 19, item 3; docs/multi_gpu.md). Each library reads its variable when it initialises, so they are set in
a rank's environment before it imports torch (``launch`` sets them at spawn) and again before the process group
starts (``apply``, for a rank started some other way, e.g. by torchrun); anything a rank starts in turn (Inductor's
compile workers) inherits them. Imports nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

MULTICAST_OFF: dict[str, str] = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
MASTER_ADDR = "127.0.0.1"  # one host: the launcher's store listens on loopback only


def rank_environment(rank: int, world_size: int, master_port: int) -> dict[str, str]:
    """What a rank's environment holds besides its parent's: multicast off and torchrun's variables (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). ``TORCHELASTIC_USE_AGENT_STORE``: the
    launcher hosts the rendezvous store (as torchrun's agent does), so no rank has to bind a port of its own."""
    return {
        **MULTICAST_OFF,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": MASTER_ADDR,
        "MASTER_PORT": str(master_port),
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }


def apply(environ: MutableMapping[str, str] | None = None) -> None:
    """Multicast off in ``environ`` (default ``os.environ``), whatever it held."""
    target = os.environ if environ is None else environ
    target.update(MULTICAST_OFF)


@contextmanager
def patched(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` holds ``values`` inside the block (a spawned child copies it as it starts), then what it held
    before: the launching process itself keeps its own environment."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
