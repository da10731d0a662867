"""`torchrun --nproc_per_node 2 -m edgedistill run`: two processes on this CPU (gloo) train shards
of the data; rank 0 alone writes; the result matches a single-process run within noise."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import tomli_w

from edgedistill.config import parse_config
from edgedistill.distributed import World, init_world
from edgedistill.pipeline import run

from conftest import tiny_run_config

TESTS = Path(__file__).parent


def _config() -> dict:
    config = tiny_run_config()
    config["distill"]["epochs"] = 10
    config["teacher_training"]["epochs"] = 5
    return config


def test_without_torchrun_the_world_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_world() == World(0, 1)


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun (from torch) is not on PATH")
def test_two_processes_match_one(tmp_path):
    config = tmp_path / "run.toml"
    config.write_bytes(tomli_w.dumps(_config()).encode())
    out = tmp_path / "two"
    proc = subprocess.run(
        ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "edgedistill", "run", str(config), "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(TESTS)}, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("report: ") == 1  # rank 0 alone reports
    assert "(2 processes)" in " ".join(proc.stdout.split())  # rich wraps long run-folder paths
    two = json.loads((out / "report.json").read_text())
    one = run(parse_config(_config(), "one"), tmp_path / "one").report
    assert [s["params"] for s in two["students"]] == [s.params for s in one.students]
    for distributed, single in zip(two["students"], one.students):
        assert abs(distributed["metrics"]["accuracy"] - single.metrics["accuracy"]) <= 0.05
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow  # 30 s; the plain two-process run stays in the default suite
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun (from torch) is not on PATH")
def test_a_transformer_teacher_trains_on_two_processes(bert_folder, tmp_path):
    """The same run for a Hugging Face teacher: each process takes its share of every batch."""
    config = {
        "name": "tiny-hf",
        "teacher": {"hf": str(bert_folder)},
        "data": {"source": "pydoc", "max_length": 32, "max_samples": 160},
        "tiers": [{"name": "half", "budget": {"params": "80%"}, "student": {"kind": "hf", "shrink": "depth"}}],
        "distill": {"epochs": 3, "lr": 1e-3},
        "measure": {"warmup": 1, "runs": 3, "throughput_batch": 2},
        "quantize": {"methods": ["int8-dynamic"]},
    }
    path = tmp_path / "run.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    out = tmp_path / "two"
    proc = subprocess.run(
        ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "edgedistill", "run", str(path), "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(TESTS)}, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("report: ") == 1 and "(2 processes)" in proc.stdout
    two = json.loads((out / "report.json").read_text())
    one = run(parse_config(config, "one"), tmp_path / "one").report
    (distributed,), (single,) = two["students"], one.students
    assert distributed["params"] == single.params
    assert abs(distributed["metrics"]["cosine"] - single.metrics["cosine"]) <= 0.05

