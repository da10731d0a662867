"""The format registry: one sweep over every registered format, and named feeds through `deploy`."""

import copy
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgedistill.compress.quantize import Int8Static, QuantizeConfig, quantize
from edgedistill.errors import UserError
from edgedistill.export.deploy import Sources, deploy
from edgedistill.export.formats import FORMATS, format_for, format_names, here_runtime, made_with
from edgedistill.export.formats.base import QAT_NOTE, OnnxFiles, int8_scheme
from edgedistill.export.lint import runtimes
from edgedistill.fileio import file_bytes
from edgedistill.ortsession import open_session, run_batched

_X86 = platform.machine().lower() in ("x86_64", "amd64")


# Sources with a student and one input array: what a format made from the student needs besides
# its converter or runtime, so `unavailable` on it says only whether that is installed.
_PROBE = Sources(
    None, None, Path("."), np.zeros((1, 1, 8, 8), np.float32), np.zeros((1, 1, 8, 8), np.float32), lambda _o: 0.0,
    QuantizeConfig().symmetric(), model=nn.Identity(),
)


def _cases():
    for entry in FORMATS.values():
        for precision in entry.precisions:
            # export_ort refuses fp16 on x86, where the file would run in fp32 (test_ort_mobile.py).
            host_cannot = entry.name == "ort" and precision == "fp16" and _X86
            missing = entry.unavailable(_PROBE)
            yield pytest.param(
                entry.name, precision, id=f"{entry.name}-{precision}",
                marks=[
                    pytest.mark.skipif(host_cannot, reason="an fp16 .ort is made on an ARM host"),
                    pytest.mark.skipif(missing is not None, reason=str(missing)),
                ],
            )


@pytest.fixture(scope="module")
def int8_mlp(mlp_onnx, digits_xy, tmp_path_factory):
    """The trained TinyMLP's int8 ONNX, as the run's quantize stage makes it."""
    x, y = digits_xy
    accuracy = lambda out: float((out.argmax(1) == y[1000:]).mean())  # noqa: E731
    return quantize(mlp_onnx, tmp_path_factory.mktemp("q") / "mlp.int8.onnx", [Int8Static()], x[:300], accuracy, x[1000:], timing_runs=2).path


def _opens_here(path) -> bool:
    runtime = here_runtime(path)
    try:
        if runtime is not None:
            runtime.input_shape(path)
        else:
            open_session(path)
    except UserError:
        return False
    return True


@pytest.mark.parametrize(("name", "precision"), list(_cases()))
def test_every_format_makes_a_checked_file(name, precision, mlp_onnx, int8_mlp, trained_mlp, digits_xy, tmp_path):
    x, y = digits_xy
    entry = format_for(name)
    src = Sources(
        mlp_onnx, int8_mlp, tmp_path, x[1000:1200], x[:300], lambda out: float((out.argmax(1) == y[1000:1200]).mean()),
        QuantizeConfig().symmetric(), timing_cache=tmp_path / "tensorrt.cache", model=trained_mlp,
    )
    (art,) = deploy(src, {(name, precision): ("some-target",)}).made
    assert (art.format, art.precision, art.targets) == (name, precision, ("some-target",))
    # A file, or a folder of files (a Core ML .mlpackage), with something in it.
    assert art.path.exists() and file_bytes(art.path) > 0 and art.source.is_file()
    # Linted by its own linter where it names one (LiteRT's file by both of its runtimes'), each a registered one.
    assert ({entry.lint_runtime} if entry.lint_runtime else set()) <= {r.runtime for r in art.lint} <= set(runtimes())
    assert all(r.ok for r in art.lint), art.lint
    # Checked against its source where it runs here (onnxruntime, or its format's runtime); and only there.
    assert art.parity.checked == entry.runs_here == _opens_here(art.path)
    assert art.parity.passed, art
    if art.build is not None and not art.build.built:  # TensorRT without a GPU here
        assert art.path == art.build.command_path and "trtexec" in art.path.read_text()


def test_unknown_formats_and_precisions_name_the_known_ones(mlp_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    with pytest.raises(UserError, match="format 'onnx-tf' is unknown: use one of " + ", ".join(format_names())):
        format_for("onnx-tf")
    src = Sources(mlp_onnx, None, tmp_path, x[:8], x[:8], lambda _o: 1.0, QuantizeConfig().symmetric())
    with pytest.raises(UserError, match="tensorrt has no precision 'fp32': use one of fp16, int8"):
        deploy(src, {("onnx", "fp16"): (), ("tensorrt", "fp32"): ()})
    assert list(tmp_path.iterdir()) == []  # refused before anything was made


def test_a_transformer_gets_an_int8_ort_from_named_feeds(bert_folder, tmp_path):
    """A tiny BERT exported as the hf run exports it: its ONNX takes input_ids, attention_mask and
    token_type_ids, and every check feeds them by name."""
    from edgedistill.data.text import builtin_sentences, tokenize
    from edgedistill.hf.export import export_hf
    from edgedistill.hf.model import load_hf

    model, tokenizer = load_hf(bert_folder)
    texts = builtin_sentences()
    calib, val = tokenize(tokenizer, texts[:32], 32), tokenize(tokenizer, texts[32:56], 32)
    exported = export_hf(model, tokenizer, tmp_path / "onnx", val)
    calib_x, val_x = calib.feed(exported.inputs), val.feed(exported.inputs)
    methods = QuantizeConfig().methods_for(exported.path)
    int8 = quantize(exported.path, tmp_path / "onnx" / "model.int8.onnx", methods, calib_x, lambda _o: 1.0, val_x, timing_runs=2)
    src = Sources(exported.path, int8.path, tmp_path / "onnx", val_x, calib_x, lambda _o: 1.0, QuantizeConfig().symmetric())

    made = {d.format: d for d in deploy(src, {("ort", "int8"): ("pixel-8",), ("onnx", "fp16"): ("jetson",)}).made}
    ort_file, fp16 = made["ort"], made["onnx"]
    assert ort_file.source == int8.path and ort_file.path.name == "model.int8.ort"
    assert ort_file.parity.passed and ort_file.parity.max_abs_err <= ort_file.parity.tolerance, ort_file
    assert [r.runtime for r in ort_file.lint] == ["ort-mobile"]
    got = run_batched(open_session(ort_file.path), val_x)
    assert got.shape == (len(val), 32) and np.isfinite(got).all()
    assert fp16.source == exported.path and fp16.parity.passed, fp16


@pytest.mark.parametrize(
    "dynamic, precision, targets, full_integer_runtime, want, said",
    [
        (False, "int8", ("pixel-8",), True, False, None),
        (True, "fp32", ("pixel-8",), True, False, None),
        (True, "int8", ("pixel-8",), True, True, "dynamic-range"),
        (True, "int8", ("pixel-8", "stm32h743"), True, False, "stm32h743 runs full-integer files only"),
        (True, "int8", ("pixel-8", "stm32h743"), False, True, "dynamic-range"),
    ],
)
def test_int8_files_made_from_the_student_follow_the_runs_int8_unless_a_target_runs_full_integer_only(
    tmp_path, dynamic, precision, targets, full_integer_runtime, want, said
):
    x = np.zeros((2, 4), np.float32)
    src = Sources(
        None, None, tmp_path, x, x, lambda _o: 1.0, QuantizeConfig().symmetric(), int8_dynamic=dynamic,
        full_integer_only=("stm32h743",),
    )
    scheme = int8_scheme(src, precision, targets, full_integer_runtime)
    assert scheme.dynamic is want
    assert (said is None and scheme.notes == ()) or said in scheme.notes[0]


def _here_int8_from_student():
    for entry in FORMATS.values():
        if entry.here is not None and "int8" in entry.precisions:
            missing = entry.unavailable(_PROBE)
            yield pytest.param(entry.name, id=entry.name, marks=pytest.mark.skipif(missing is not None, reason=str(missing)))


@pytest.mark.parametrize("name", list(_here_int8_from_student()))
def test_an_int8_file_made_from_the_student_is_made_from_the_qat_student_where_one_is_given(
    name, mlp_onnx, int8_mlp, trained_mlp, digits_xy, tmp_path
):
    x, _ = digits_xy
    other = copy.deepcopy(trained_mlp)
    with torch.no_grad():
        other.net[-1].weight.neg_()  # another student: its classes ranked the other way round
    src = Sources(
        mlp_onnx, int8_mlp, tmp_path, x[1000:1100], x[:300], lambda _o: 1.0, QuantizeConfig().symmetric(),
        model=trained_mlp, int8_fp32=mlp_onnx, int8_model=other,
    )
    (art,) = deploy(src, {(name, "int8"): ("some-target",)}).made
    got = format_for(name).here.outputs(art.path, x[1000:1100])
    with torch.no_grad():
        want, plain = (m(torch.as_tensor(x[1000:1100])).numpy() for m in (other, trained_mlp))
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.9 > (got.argmax(1) == plain.argmax(1)).mean()
    assert QAT_NOTE in art.notes


@pytest.mark.parametrize("qat", [True, False], ids=["qat-student", "run-student"])
def test_the_symmetric_int8_of_a_qat_student_is_held_to_the_score_before_qat(qat, mlp_onnx, digits_xy, tmp_path):
    x, y = digits_xy
    src = Sources(
        mlp_onnx, None, tmp_path, x[1000:1100], x[:100], lambda o: float((o.argmax(1) == y[1000:1100]).mean()),
        QuantizeConfig().symmetric(), int8_fp32=mlp_onnx if qat else None, int8_reference=0.5,
    )
    _path, quant = OnnxFiles(src).symmetric
    own = src.score(run_batched(open_session(mlp_onnx), x[1000:1100]))
    assert own != 0.5 and quant.fp32_score == (0.5 if qat else own)


def test_what_formats_are_made_with_covers_every_format_asked_for_once():
    # Asked as the deploy stage asks: a generator over the wanted (format, precision) pairs.
    got = made_with(name for name in ("tflite", "pte", "onnx", "pte"))
    assert list(got) == [n for n in FORMATS if n in ("tflite", "pte", "onnx")]
    for name, made in got.items():
        assert made["revision"] == FORMATS[name].revision
        assert set(made["converters"]) == set(FORMATS[name].converters)
