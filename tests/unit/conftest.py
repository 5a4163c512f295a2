"""Fixtures of the unit tier."""
import os
import socket

import pytest


@pytest.fixture(scope="module")
def gloo_rank():
    """A one-rank gloo process group in this process, as DeepSpeed's engine needs one (CPU
    accelerator); kept for the rest of the session once made."""
    import torch.distributed as dist

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed reads it even when a group already exists
    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
        dist.init_process_group("gloo")
    yield
