"""Figure 14: int8 against fp32 in each runtime, on the same students: ONNX Runtime (the run's
static QDQ int8), ExecuTorch (XNNPACK, PT2E int8) and LiteRT (XNNPACK, PT2E full-integer int8),
held-out accuracy, file size and latency, measured side by side in one process.

Run: python -m benchmarks.runtimes [--quick]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks import tasks
from benchmarks.fixtures import TRAIN_THREADS, torch_threads
from benchmarks.qat import ARCHITECTURES, calibration_inputs, sensor_config
from benchmarks.results import Figure, main, table
from edgedistill.compress.distill import accuracy, fit, teacher_outputs
from edgedistill.compress.quantize import Int8Static, quantize
from edgedistill.export import executorch as et
from edgedistill.export import litert as lt
from edgedistill.export.formats import here_runtime
from edgedistill.export.onnx import OnnxExport, export_onnx
from edgedistill.ortsession import open_session, run_batched
from edgedistill.targets.runners.local import LocalRunner
from edgedistill.timing import load_per_core

HEADING = "## 14. int8 against fp32 in each runtime: ONNX Runtime, ExecuTorch and LiteRT on the same students"
# Three of figure 11's students: the depthwise-heavy MobileNet-v2 style, a separable CNN, a plain CNN.
STUDIED = (0, 1, 3)
QUICK_EPOCHS, RUNS, QUICK_RUNS = 3, 300, 30
RUNTIMES = ("onnxruntime", "ExecuTorch", "LiteRT")


def _files(arch: str, folder: Path, quick: bool) -> dict[str, Path]:
    """One student of `arch` distilled on sensor-digits (seed 0) and its four files."""
    cfg, data, teacher = sensor_config(), tasks.sensor(), tasks.sensor_teacher()
    distill = cfg.distill.model_copy(update={"epochs": QUICK_EPOCHS}) if quick else cfg.distill
    torch.manual_seed(0)
    student = fit(
        ARCHITECTURES[arch](), data.train, data.val, distill, 0, teacher_outputs(teacher, data.train.x),
        live=teacher if distill.augment.active else None,
    ).model.eval()
    how = OnnxExport(opset=cfg.export.opset, simplify=cfg.export.simplify, parity_tolerance=cfg.export.parity_tolerance)
    calib = calibration_inputs(data, 0)
    fp32 = export_onnx(student, data.val.x[:2], data.val.x, folder / "model.onnx", how).path
    int8 = quantize(fp32, folder / "model.int8.onnx", (Int8Static(),), calib, lambda o: accuracy(o, data.val.y), data.val.x, 1.0, timing_runs=1).path
    files = {"onnxruntime fp32": fp32, "onnxruntime int8": int8}
    for p in ("fp32", "int8"):
        files[f"ExecuTorch {p}"] = et.export_pte(student, p, folder / f"model.{p}.pte", calib, data.val.x).path
        files[f"LiteRT {p}"] = lt.export_tflite(student, p, folder / f"model.{p}.tflite", calib, data.val.x).path
    return files


def _held_out(path: Path) -> float:
    x = tasks.sensor().test
    runtime = here_runtime(path)
    out = runtime.outputs(path, x.x) if runtime is not None else run_batched(open_session(path, threads=1), x.x)
    return accuracy(out, x.y)


def _rows(arch: str, files: dict[str, Path], quick: bool) -> list[list[str]]:
    runner = LocalRunner(threads=1, warmup=20, runs=QUICK_RUNS if quick else RUNS)
    p50 = {name: runner.measure(path).p50_ms for name, path in files.items()}
    rows = []
    for runtime in RUNTIMES:
        f32, i8 = f"{runtime} fp32", f"{runtime} int8"
        rows.append([
            arch, runtime, f"{100 * _held_out(files[f32]):.2f}%", f"{100 * _held_out(files[i8]):.2f}%",
            f"{files[f32].stat().st_size:,}", f"{files[i8].stat().st_size:,}",
            f"{p50[f32]:.4f}", f"{p50[i8]:.4f}", f"{p50[f32] / p50[i8]:.2f}x",
        ])
    return rows


def run(quick: bool = False) -> str:
    missing = [why for why in (et.available(), lt.available()) if why is not None]
    if missing:
        return f"Not run: {'; '.join(missing)}."
    load_before = load_per_core()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch_threads(TRAIN_THREADS):
        for i in STUDIED:
            arch = list(ARCHITECTURES)[i]
            folder = Path(tmp) / str(i)
            rows += _rows(arch, _files(arch, folder, quick), quick)
    load_after = load_per_core()
    return "\n".join([
        "What: the same distilled students in three runtimes, fp32 beside int8 in each, as a phone would get them: "
        "onnxruntime's static QDQ int8 (per-channel weights, uint8 activations, MinMax on the calibration inputs: the run's "
        "default), ExecuTorch's XNNPACK program (`edgedistill.export.executorch`: PT2E int8 with XNNPACK's quantizer, "
        "symmetric per-channel weights, int8 activations, calibrated on the same inputs) and LiteRT's flatbuffer "
        "(`edgedistill.export.litert`: PT2E full-integer int8 with litert-torch's quantizer, symmetric per-channel weights, "
        "histogram-calibrated int8 activations, int8 input and output, on the same inputs).",
        "",
        f"How: three of figure 11's students, distilled on sensor-digits at seed 0 as the default example distils "
        f"({'quick: ' + str(QUICK_EPOCHS) + ' epochs' if quick else 'its epochs'}); held-out accuracy on figure 11's held-out "
        f"20 % ({len(tasks.sensor().test)} samples), nothing decides on it. Latency: p50 at batch 1 by the run's local runner "
        f"(`LocalRunner`, {QUICK_RUNS if quick else RUNS} timed runs after 20 warm-ups, at least its minimum time), one after "
        "another in this process; onnxruntime at 1 intra-op thread; ExecuTorch's Python runtime at its own thread count (it "
        "exposes none to set); LiteRT's interpreter (`ai-edge-litert`, XNNPACK delegate) at its default thread count. The "
        "ExecuTorch and LiteRT calls time the runtime on an input handed over once in the file's own form (a tensor; "
        "for LiteRT int8, already quantized, as an app's native code would: numpy's quantization alone costs about "
        "10 µs here, half a tiny model's invoke). Bytes are each file's. Ratio = fp32 p50 / int8 p50 (above 1: int8 faster). "
        f"Load per core {load_before:.2f} before, {load_after:.2f} after.",
        "",
        table(
            ["student", "runtime", "fp32 held-out", "int8 held-out", "fp32 bytes", "int8 bytes", "fp32 p50 ms", "int8 p50 ms", "fp32/int8"],
            rows, right=[False, False, True, True, True, True, True, True, True],
        ),
    ])


FIGURE = Figure("runtimes", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
