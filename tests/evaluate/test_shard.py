"""keeptune.evaluate.shard: the identity in one process; in two gloo processes, shares that split the
items, records gathered in rank order (as JSON, any size, one rank with none), rank 0's value and its
errors handed to every rank."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from keeptune.evaluate import shard
from tests.conftest import REPO

ITEMS = [f"item-{i}" for i in range(11)]


def test_one_process_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert shard.rank_world() == (0, 1)
    with shard.sharded():
        assert shard.rank_world() == (0, 1)
        assert shard.share(ITEMS) == ITEMS
        assert shard.gather([{"id": "a"}]) == [{"id": "a"}]
        assert shard.broadcast({"x": 1}) == {"x": 1}
        assert shard.lead(lambda: 7) == 7
        shard.barrier()


def test_torchrun_without_a_process_group_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="needs the process group"), shard.sharded():
        pass


def worker(store: str, rank: int, world: int, out: str) -> None:
    """One rank: every primitive once, what it saw written to OUT/rank{R}.json."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    seen = {"outside": shard.rank_world()}  # the group is up, but no sharded() yet: one process
    with shard.sharded():
        seen["rank_world"] = shard.rank_world()
        seen["share"] = shard.share(ITEMS)
        # unequal sizes (rank 1's one record is longer than rank 0's three), non-ASCII text, floats
        mine = [{"id": f"{rank}-{i}", "text": "é" * (rank * 300 + i), "f": 0.1 * i} for i in range(3 - 2 * rank)]
        seen["gathered"] = shard.gather(mine)
        seen["one empty"] = shard.gather([rank] if rank == 0 else [])
        seen["broadcast"] = shard.broadcast({"from": rank})
        seen["lead"] = shard.lead(lambda: {"made by": rank})
        try:
            shard.lead(lambda: (_ for _ in ()).throw(OSError("disk full")))
        except shard.RankFailed as err:
            seen["failed"] = [str(err), err.kind]
        except OSError as err:
            seen["failed"] = [str(err), "raised here"]
        shard.barrier()
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen), encoding="utf-8")
    dist.destroy_process_group()


def test_two_gloo_processes_share_gather_and_lead(tmp_path):
    command = "import sys; from tests.evaluate.test_shard import worker; worker(sys.argv[1], int(sys.argv[2]), 2, " \
              "sys.argv[3])"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")} | {"OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-c", command, str(tmp_path / "store"), str(rank), str(tmp_path)],
                                  cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text(encoding="utf-8")) for rank in range(2)]

    assert [s["outside"] for s in seen] == [[0, 1], [0, 1]]
    assert [s["rank_world"] for s in seen] == [[0, 2], [1, 2]]
    shares = [s["share"] for s in seen]
    assert sorted(shares[0] + shares[1]) == sorted(ITEMS) and not set(shares[0]) & set(shares[1])
    assert abs(len(shares[0]) - len(shares[1])) <= 1
    expected = [{"id": f"0-{i}", "text": "é" * i, "f": 0.1 * i} for i in range(3)] + [
        {"id": "1-0", "text": "é" * 300, "f": 0.0}]
    assert seen[0]["gathered"] == seen[1]["gathered"] == expected
    assert seen[0]["one empty"] == seen[1]["one empty"] == [0]
    assert [s["broadcast"] for s in seen] == [{"from": 0}, {"from": 0}]
    assert [s["lead"] for s in seen] == [{"made by": 0}, {"made by": 0}]
    assert seen[0]["failed"] == ["disk full", "raised here"]
    assert seen[1]["failed"] == ["rank 0: disk full", "OSError"]
