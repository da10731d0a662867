import os
import shlex
import stat
import subprocess

import numpy as np
import pytest
from conftest import tiny_cnn, tiny_tokens_onnx

from edgedistill.compress.quantize import Int8Static, Int8StaticSymmetric, quantize
from edgedistill.errors import UserError
from edgedistill.export import tensorrt as trt_module
from edgedistill.export.fp16 import to_fp16
from edgedistill.export.onnx import OnnxExport, export_onnx
from edgedistill.export.tensorrt import TrtBuild, build_tensorrt, tensorrt_status, trtexec_command

TRT_OK, TRT_REASON = tensorrt_status()


@pytest.fixture(scope="module")
def models(tmp_path_factory, digits_xy):
    """The TinyCNN as fp32, fp16, TensorRT-style int8 (symmetric) and default int8 (uint8) ONNX,
    in a folder whose name needs shell quoting."""
    x, y = digits_xy
    folder = tmp_path_factory.mktemp("trt") / "my models"
    fp32 = export_onnx(tiny_cnn(), x[:2], x[:64], folder / "cnn.onnx").path
    fp16 = to_fp16(fp32, folder / "cnn.fp16.onnx", x[:64]).path
    symmetric = folder / "cnn.sym.onnx"
    quantize(fp32, symmetric, [Int8StaticSymmetric()], x[:128], lambda _o: 1.0, x[:32], max_drop=1.0, timing_runs=1)
    accuracy = lambda out: float((out.argmax(1) == y[1000:]).mean())  # noqa: E731
    default = quantize(fp32, folder / "cnn.u8.onnx", [Int8Static()], x[:128], accuracy, x[1000:], timing_runs=2).path
    static = export_onnx(tiny_cnn(), x[:2], x[:8], folder / "static.onnx", OnnxExport(dynamic_batch=False)).path
    return {"fp32": fp32, "fp16": fp16, "sym": symmetric, "u8": default, "static": static}


def _parse(command):
    """(flags without a value, {flag: value}) of a trtexec line."""
    args = shlex.split(command)
    assert args[0] == "trtexec"
    bare = {a for a in args[1:] if "=" not in a}
    valued = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    return bare, valued


def test_fp16_command_for_the_fp32_cnn(models, tmp_path):
    engine = tmp_path / "out dir" / "cnn.fp16.engine"
    bare, args = _parse(trtexec_command(TrtBuild(models["fp32"], "fp16", opt_batch=4), engine))
    assert bare == {"--fp16"}
    assert args["--onnx"] == str(models["fp32"])
    assert args["--saveEngine"] == str(engine)
    assert args["--minShapes"] == "input:1x1x8x8"
    assert args["--optShapes"] == "input:4x1x8x8"
    assert args["--maxShapes"] == "input:32x1x8x8"
    assert args["--exportTimes"] == str(tmp_path / "out dir" / "cnn.fp16.times.json")
    assert args["--timingCacheFile"] == str(tmp_path / "out dir" / "timing.cache")


@pytest.mark.parametrize(
    ("model", "precision", "flags"),
    [
        ("sym", "int8", {"--stronglyTyped"}),  # explicit quantization, typed by the Q/DQ nodes
        ("fp16", "fp16", {"--stronglyTyped"}),  # already fp16: typed by the graph
        ("sym", "fp16", {"--int8", "--fp16"}),  # Q/DQ int8, the float rest may run in fp16
    ],
)
def test_typing_flags_follow_the_model(models, tmp_path, model, precision, flags):
    bare, args = _parse(trtexec_command(TrtBuild(models[model], precision), tmp_path / "e.engine"))
    assert bare == flags
    assert args["--minShapes"] == "input:1x1x8x8"


def test_fixed_batch_model_needs_no_profile(models, tmp_path):
    _, args = _parse(trtexec_command(TrtBuild(models["static"], "fp16"), tmp_path / "e.engine"))
    assert not {"--minShapes", "--optShapes", "--maxShapes"} & set(args)


def test_paths_relative_to_a_base(models):
    folder = models["fp32"].parent
    command = trtexec_command(TrtBuild(models["fp32"], "fp16"), folder / "trt" / "cnn.engine", base=folder / "trt")
    _, args = _parse(command)
    assert args["--onnx"] == os.path.join("..", "cnn.onnx")
    assert args["--saveEngine"] == "cnn.engine"
    assert args["--timingCacheFile"] == "timing.cache"


def test_models_tensorrt_cannot_take_are_refused(models, tmp_path):
    with pytest.raises(UserError, match="has no Q/DQ nodes"):
        trtexec_command(TrtBuild(models["fp32"], "int8"), tmp_path / "e.engine")
    with pytest.raises(UserError, match="not symmetric int8 Q/DQ"):
        trtexec_command(TrtBuild(models["u8"], "int8"), tmp_path / "e.engine")
    with pytest.raises(UserError, match="not symmetric int8 Q/DQ"):
        build_tensorrt(TrtBuild(models["u8"], "int8"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_builds_raise_user_error(models):
    with pytest.raises(UserError, match="precision 'int4'"):
        TrtBuild(models["fp32"], "int4")
    with pytest.raises(UserError, match="min_batch <= opt_batch"):
        TrtBuild(models["fp32"], "fp16", min_batch=4, opt_batch=2)
    with pytest.raises(UserError, match="min_batch"):
        TrtBuild(models["fp32"], "fp16", min_batch=0)


def test_build_without_tensorrt_writes_a_script_that_runs_trtexec(models, tmp_path, monkeypatch):
    monkeypatch.setattr(trt_module, "tensorrt_status", lambda: (False, "no CUDA GPU is visible (test)"))
    out = tmp_path / "trt out"
    artifact = build_tensorrt(TrtBuild(models["sym"], "int8"), out)
    assert not artifact.built and artifact.engine is None
    assert artifact.reason == "no CUDA GPU is visible (test)"
    assert artifact.p50_ms is None and artifact.build_seconds is None
    assert artifact.precision == "int8" and artifact.onnx == models["sym"]
    script = artifact.command_path
    assert script == out / "cnn.sym.int8.trtexec.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    assert [p.name for p in out.iterdir()] == [script.name]
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n") and text.endswith(f"exec {artifact.command}\n")
    # Run it with a stand-in trtexec that records where it ran and what it got.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "trtexec"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$PWD" "$@" > "$TRTEXEC_LOG"\n')
    fake.chmod(0o755)
    log = tmp_path / "args.txt"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TRTEXEC_LOG": str(log)}
    subprocess.run([str(script)], check=True, env=env, cwd=tmp_path)
    cwd, *args = log.read_text().splitlines()
    assert args == shlex.split(artifact.command)[1:]
    flags = dict(a.split("=", 1) for a in args if "=" in a)
    # Relative to the script's folder, so the folder can be copied to the device as a whole.
    assert os.path.samefile(os.path.join(cwd, flags["--onnx"]), models["sym"])
    assert os.path.join(cwd, flags["--saveEngine"]) == str(out / "cnn.sym.int8.engine")


@pytest.mark.skipif(TRT_OK, reason="tensorrt and a CUDA GPU are present")
def test_status_explains_what_is_missing():
    assert not TRT_OK
    assert ("tensorrt" in TRT_REASON or "CUDA" in TRT_REASON) and "\n" not in TRT_REASON


@pytest.mark.skipif(not TRT_OK, reason=TRT_REASON)
@pytest.mark.parametrize(("model", "precision"), [("fp32", "fp16"), ("fp16", "fp16"), ("sym", "int8")])
def test_real_engine_build(models, tmp_path, model, precision):
    cache = tmp_path / "timing.cache"
    artifact = build_tensorrt(TrtBuild(models[model], precision, max_batch=8), tmp_path, timing_cache=cache)
    assert artifact.command_path.is_file()
    if not artifact.built:
        # TensorRT 11 has no weak typing: fp16 from an fp32 model must go through to_fp16.
        assert model == "fp32" and "BuilderFlag.FP16" in artifact.reason
        return
    assert artifact.engine == tmp_path / f"{models[model].stem}.{precision}.engine"
    assert artifact.engine.stat().st_size > 0
    assert artifact.build_seconds > 0 and artifact.p50_ms is not None and artifact.p50_ms > 0
    assert cache.stat().st_size > 0
    again = build_tensorrt(TrtBuild(models[model], precision, max_batch=8), tmp_path, timing_cache=cache)
    assert again.built and np.isfinite(again.p50_ms)


@pytest.fixture(scope="module")
def tokens_onnx(tmp_path_factory):
    """A graph of (batch, sequence) token inputs, both axes dynamic, as a transformer's export has them."""
    return tiny_tokens_onnx(tmp_path_factory.mktemp("trt-tokens") / "tokens.onnx")


def test_a_dynamic_sequence_axis_is_spanned_by_the_profile_where_a_range_is_given(tokens_onnx, tmp_path):
    with pytest.raises(UserError, match="dynamic dimension besides the batch"):
        trtexec_command(TrtBuild(tokens_onnx, "fp16"), tmp_path / "e.engine")
    _, args = _parse(trtexec_command(TrtBuild(tokens_onnx, "fp16", seq=(1, 64, 128)), tmp_path / "e.engine"))
    assert args["--minShapes"] == "ids:1x1,mask:1x1"
    assert args["--optShapes"] == "ids:1x64,mask:1x64"
    assert args["--maxShapes"] == "ids:32x128,mask:32x128"
    with pytest.raises(UserError, match="sequence lengths must satisfy"):
        TrtBuild(tokens_onnx, "fp16", seq=(8, 4, 16))
