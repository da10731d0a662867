"""Transformer students through the formats converted from PyTorch (.pte, .tflite, .mlpackage):
the student takes `input_ids` alone (its mask is derived in the graph), its sources hold the
tokenizer's named feeds, and each file is made at the feeds' fixed length from the feeds its
forward names. A one-layer tiny BERT keeps the conversions to seconds."""

import numpy as np
import pytest
import torch
from conftest import tiny_bert_folder
from torch import nn

from edgedistill.compress.quantize import QuantizeConfig
from edgedistill.export import coreml as cm
from edgedistill.export import executorch as et
from edgedistill.export import litert as lt
from edgedistill.export.deploy import Sources, deploy
from edgedistill.export.eager import FP32_TOLERANCE, eager_rows, model_inputs
from edgedistill.targets.runners.local import LocalRunner

SEQ = 16


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A one-layer tiny BERT student and its tokenizer's named feeds padded to SEQ tokens, as a
    run's sources give them: 4 to calibrate, 3 to check."""
    from edgedistill.data.text import FEED_NAMES, FixedLength, builtin_sentences, tokenize
    from edgedistill.hf.model import load_hf

    model, tokenizer = load_hf(tiny_bert_folder(tmp_path_factory.mktemp("bert1") / "bert", layers=1))
    texts = builtin_sentences()
    fixed = FixedLength(SEQ, tokenizer.pad_token_id)
    calib, check = tokenize(tokenizer, texts[:4], SEQ), tokenize(tokenizer, texts[4:7], SEQ)
    return model, fixed.fit(calib.feed(FEED_NAMES)), fixed.fit(check.feed(FEED_NAMES))


def _eager(model: nn.Module, feeds: dict) -> np.ndarray:
    return eager_rows(model, model_inputs(model, feeds))


@pytest.mark.skipif(et.available() is not None, reason=str(et.available()))
def test_a_transformer_student_becomes_fp32_and_int8_programs_fed_by_name(bert, tmp_path):
    model, calib, check = bert
    made = {p: et.export_pte(model, p, tmp_path / f"model.{p}.pte", calib, check) for p in et.PRECISIONS}
    for precision, art in made.items():
        assert art.parity.checked and art.parity.passed, (precision, art.parity)
        assert et.input_names(art.path) == ("input_ids",) and et.input_shape(art.path) == (1, SEQ)
        # Scored as the run scores it: from the named feeds, of which it takes input_ids.
        got = et.run_pte(art.path, check)
        assert got.shape == (3, 32) and np.isfinite(got).all()
    assert np.abs(et.run_pte(made["fp32"].path, check) - _eager(model, check)).max() <= FP32_TOLERANCE
    # The local runner's float noise becomes int64 ids the program takes.
    m = LocalRunner(warmup=1, runs=3).measure(made["int8"].path)
    assert m.p50_ms > 0 and m.runtime.startswith("ExecuTorch")


@pytest.mark.skipif(lt.available() is not None, reason=str(lt.available()))
def test_a_transformer_student_becomes_fp32_and_int8_litert_files_fed_by_name(bert, tmp_path):
    model, calib, check = bert
    made = {p: lt.export_tflite(model, p, tmp_path / f"model.{p}.tflite", calib, check) for p in ("fp32", "int8")}
    for precision, art in made.items():
        assert art.parity.checked and art.parity.passed, (precision, art.parity)
        assert lt.input_names(art.path) == ("input_ids",) and lt.input_shape(art.path) == (1, SEQ)
        # The converter makes int64 ids int32; the call casts them as the file declares.
        assert lt.interpreter(art.path).get_input_details()[0]["dtype"] == np.int32
        got = lt.run_tflite(art.path, check)
        assert got.shape == (3, 32) and np.isfinite(got).all()
    assert np.abs(lt.run_tflite(made["fp32"].path, check) - _eager(model, check)).max() <= FP32_TOLERANCE
    m = LocalRunner(warmup=1, runs=3).measure(made["int8"].path)
    assert m.p50_ms > 0 and m.runtime.startswith("LiteRT")


@pytest.mark.skipif(et.available() is not None, reason=str(et.available()))
def test_a_dynamic_int8_program_of_a_transformer_is_within_two_output_steps_of_the_student_and_smaller(bert, tmp_path):
    model, calib, check = bert
    fp32 = et.export_pte(model, "fp32", tmp_path / "model.fp32.pte", calib, check)
    # A bar of 0: held to two int8 steps of the fp32 student's output range, no more.
    art = et.export_pte(model, "int8", tmp_path / "model.int8.pte", calib, check, dynamic_error=0.0)
    assert art.parity.checked and art.parity.passed, art.parity
    # The Linear weights shrink to int8; the embedding table stays float (XNNPACK takes no gather).
    assert art.path.stat().st_size < 0.8 * fp32.path.stat().st_size


@pytest.mark.skipif(lt.available() is not None, reason=str(lt.available()))
def test_a_dynamic_range_litert_file_takes_token_ids_and_holds_int8_weights(bert, tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    model, calib, check = bert
    fp32 = lt.export_tflite(model, "fp32", tmp_path / "model.fp32.tflite", calib, check)
    art = lt.export_tflite(model, "int8", tmp_path / "model.int8.tflite", calib, check, dynamic_error=0.0)
    assert art.parity.checked and art.parity.passed, art.parity
    it = lt.interpreter(art.path)
    # Dynamic-range: the interface is the fp32 file's (ids in, floats out), only the weights are int8.
    assert it.get_input_details()[0]["dtype"] == np.int32 and it.get_output_details()[0]["dtype"] == np.float32
    graph = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(art.path.read_bytes(), 0)).subgraphs[0]
    assert any(t.type == schema.TensorType.INT8 for t in graph.tensors)
    assert art.path.stat().st_size < 0.8 * fp32.path.stat().st_size


@pytest.mark.skipif(cm.available() is not None, reason=str(cm.available()))
def test_a_transformer_student_becomes_a_core_ml_package_taking_int32_ids(bert, tmp_path):
    model, _, check = bert
    # fp16: W8A8 of a transformer converts too (MiniLM's, in the note), but the quantizer's first
    # package in a process takes about 100 s.
    art = cm.export_coreml(model, {k: v[:1] for k, v in check.items()}, "fp16", tmp_path / "model.fp16.mlpackage")
    assert art.check.inputs == (f"input_ids: 1x{SEQ} int32",) and art.check.unsupported == ()
    assert "fp16" in art.check.weight_dtypes


class _Segments(nn.Module):
    """A student whose forward takes a feed no tokenizer here gives."""

    def forward(self, input_ids: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
        return (input_ids + segment_ids).float()


def test_a_student_whose_forward_names_a_feed_the_inputs_lack_is_refused_saying_which(bert, tmp_path):
    _, calib, check = bert
    src = Sources(None, None, tmp_path, check, calib, lambda _o: 1.0, QuantizeConfig().symmetric(), model=_Segments())
    want = {("pte", "int8"): ("pixel-8",), ("tflite", "int8"): ("pixel-8",), ("mlpackage", "fp16"): ("iphone-15",)}
    skipped = deploy(src, want).skipped
    assert len(skipped) == 3
    for s in skipped:
        assert "forward takes (input_ids, segment_ids)" in s.reason and "lack segment_ids" in s.reason, s
    assert list(tmp_path.iterdir()) == []
