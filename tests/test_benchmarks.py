"""The benchmark scripts run end to end at toy sizes on CPU (figures: benchmarks/RESULTS.md)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _run(*args):
  proc = subprocess.run(
    [sys.executable, *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_gpu_throughput_smoke_on_cpu(tmp_path):
  """The GPU benchmark end to end on CPU, no data: the step, torch's (in its own process), the
  LSTMs, and the input pipeline feeding the step that augments on the device; the JSON file it
  rewrites after each part matches the last line."""
  path = tmp_path / "gpu.json"
  out = _run("benchmarks/gpu_throughput.py", "--smoke", "--json", "--out", str(path))
  assert json.loads(path.read_text()) == out
  assert out["augment_where"] == "device" and out["skipped"] == []
  assert out["step_images_per_s"] > 0 and out["epoch_images"] == 48 and out["epoch_s"] > 0
  assert out["lstm_fused_sequences_per_s"] > 0
  # The cuDNN LSTM lowers for NVIDIA GPUs only: off one its failure is recorded, the rest runs.
  assert "NVIDIA GPU" in out["errors"].pop("lstm_cudnn")
  if importlib.util.find_spec("torch") is not None:
    assert out["errors"] == {}
    assert out["torch_amp_images_per_s"] > 0 and out["lstm_torch_sequences_per_s"] > 0
    assert out["torch_amp_bf16"] is False  # autocast on CUDA only
    assert out["ratio_vs_torch"] == pytest.approx(
      out["step_images_per_s"] / out["torch_amp_images_per_s"], rel=0.01
    )


def test_gpu_throughput_skips_parts_past_its_budget(tmp_path):
  """A part that would start past --budget-s is skipped and named; the file is still written."""
  path = tmp_path / "gpu.json"
  out = _run(
    "benchmarks/gpu_throughput.py", "--smoke", "--budget-s", "-1", "--json", "--out", str(path)
  )
  assert out["skipped"] == ["step", "torch", "lstm", "epoch"] and "step_images_per_s" not in out
  assert json.loads(path.read_text()) == out


def test_gpu_throughput_memory_analysis_compiles_the_step_alone():
  """--memory-analysis reports XLA's buffer sizes of the compiled step and runs no part."""
  out = _run("benchmarks/gpu_throughput.py", "--smoke", "--memory-analysis", "--json")
  assert out["temp_mib"] > 0 and out["argument_mib"] > 0
  assert "step_images_per_s" not in out and out["errors"] == {}


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_compare_torch_json_rows():
  rows = _run(
    "benchmarks/compare_torch.py",
    "--models",
    "resnet18_bilstm,bilstm",
    "--width",
    "8",
    "--image-size",
    "32",
    "--batch",
    "4",
    "--vocab",
    "30",
    "--length",
    "5",
    "--embed",
    "8",
    "--hidden",
    "8",
    "--warmup",
    "1",
    "--steps",
    "1",
    "--repeats",
    "1",
    "--pause",
    "0",
    "--json",
  )
  assert [r["model"] for r in rows] == ["resnet18_bilstm", "bilstm"]
  for r in rows:
    assert set(r) == {
      "model",
      "jax_steps_per_s",
      "torch_steps_per_s",
      "ratio",
      "batch",
      "image_size",
      "device",
      "cpu_kernels",
    }
    assert r["cpu_kernels"] in ("ynnpack", "eigen")  # a CPU: the step train.py would choose
    assert r["jax_steps_per_s"] > 0 and r["torch_steps_per_s"] > 0 and r["batch"] == 4
  assert rows[0]["image_size"] == 32 and rows[1]["image_size"] is None


@pytest.mark.slow
def test_loader_json_line_names_the_placement_and_both_rates():
  out = _run(
    "benchmarks/loader.py",
    "--synthetic",
    "--size",
    "32",
    "--n",
    "64",
    "--batch",
    "8",
    "--repeats",
    "1",
    "--max-batches",
    "2",
    "--no-step",
    "--json",
  )
  assert out["where"] == "host" and out["size"] == 32  # 'auto' on a CPU below 128 px
  assert out["host_images_per_s"] > 0 and out["device_augment_images_per_s"] > 0
  assert (
    out["host_images_per_s"]
    == out["rows"]["grain train pipeline, augmentation on the host, 2 threads"]
  )


def test_text_baseline_on_a_table_folder(tmp_path):
  """The TF-IDF baseline with own_data's split, on a generated table folder (train + test)."""
  pytest.importorskip("sklearn")
  from tests.test_own_data import SIZES, make_own_data

  root = tmp_path / "mine"
  make_own_data(str(root))
  proc = subprocess.run(
    [
      sys.executable,
      "benchmarks/text_baseline.py",
      "--table",
      str(root),
      "--test",
      str(root / "test.jsonl"),
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = proc.stdout.strip().splitlines()[-1]
  n_val = round(SIZES["train"] * 0.1)
  assert f"fit {SIZES['train'] - n_val} rows" in line and f"({SIZES['test']} rows)" in line
  f1 = float(line.split("test samples-F1 ")[1].split()[0])
  assert 0.0 <= f1 <= 1.0
