import json

import onnx
import pytest
from conftest import tiny_cnn, tiny_mlp
from onnx import TensorProto, helper

from edgedistill.compress.quantize import Int8Static, Int8StaticSymmetric, quantize
from edgedistill.errors import UserError
from edgedistill.export.lint import Finding, LintResult, lint, runtimes
from edgedistill.export.lint.tensorrt import matrix, reference
from edgedistill.export.onnx import export_onnx

STUDENT_OPS = "Conv,Flatten,Gemm,MaxPool,Relu,Reshape"


def _save(path, nodes, inputs, outputs, opset=18, initializers=(), functions=(), extra_opsets=()):
    """A hand-made ONNX file: `inputs`/`outputs` are (name, elem_type, shape) triples."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs],
        initializer=list(initializers),
    )
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def students(tmp_path_factory, digits_xy):
    """TinyCNN and TinyMLP exported at opset 18, each as fp32, our int8 QDQ and a TensorRT-style
    int8 QDQ (int8 activations, symmetric, float bias)."""
    x, _ = digits_xy
    out = tmp_path_factory.mktemp("lint")
    models = {}
    for name, model in (("cnn", tiny_cnn()), ("mlp", tiny_mlp())):
        fp32 = export_onnx(model, x[:2], x[:64], out / f"{name}.onnx").path
        ours = quantize(
            fp32, out / f"{name}.int8.onnx", [Int8Static()], x[:128], lambda o: 1.0, x[:32],
            max_drop=1.0, timing_runs=1,
        ).path
        trt = out / f"{name}.trt-int8.onnx"
        quantize(fp32, trt, [Int8StaticSymmetric()], x[:128], lambda o: 1.0, x[:32], max_drop=1.0, timing_runs=1)
        models[name] = {"fp32": fp32, "int8": ours, "trt-int8": trt}
    return models


@pytest.mark.parametrize("runtime", runtimes(".onnx"))  # Core ML's, of packages: test_coreml.py
def test_every_registered_linter_names_its_reference(runtime, students):
    result = lint(students["cnn"]["fp32"], runtime)
    assert isinstance(result, LintResult) and result.runtime == runtime
    assert result.model == students["cnn"]["fp32"] and result.reference
    assert all(isinstance(f, Finding) for f in result.findings)
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["ok"] == result.ok and len(as_dict["findings"]) == len(result.findings)


def test_tensorrt_reference_cites_the_10x_matrix():
    source = matrix()["source"]
    assert source["repository"] == "https://github.com/onnx/onnx-tensorrt"
    assert source["tensorrt_version"].startswith("10.") and len(source["commit"]) == 40
    assert not matrix()["operators"]["Det"]["supported"]
    assert source["commit"] in reference() and source["tensorrt_version"] in reference()


@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize("kind", ["fp32", "trt-int8"])
def test_students_lint_clean_for_tensorrt(students, name, kind):
    result = lint(students[name][kind], "tensorrt")
    assert result.ok, result.findings


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_our_uint8_qdq_is_flagged_for_tensorrt(students, name):
    # Our int8-static models use uint8 asymmetric activations and int32 biases; TensorRT takes
    # only int8/fp8/int4 with zero points of 0 into DequantizeLinear.
    result = lint(students[name]["int8"], "tensorrt")
    assert not result.ok
    assert {f.op for f in result.findings} <= {"QuantizeLinear", "DequantizeLinear"}
    reasons = " ".join(f.reason for f in result.findings)
    assert "is UINT8; TensorRT supports DequantizeLinear for INT8, FP8, INT4" in reasons
    assert "is INT32" in reasons


def test_tensorrt_flags_unsupported_and_custom_domain_ops(tmp_path):
    path = _save(
        tmp_path / "m.onnx",
        [
            helper.make_node("Det", ["x"], ["d"], name="det0"),
            helper.make_node("MyOp", ["d"], ["y"], name="mine", domain="com.example"),
        ],
        [("x", TensorProto.FLOAT, [2, 2])],
        [("y", TensorProto.FLOAT, [])],
        extra_opsets=[("com.example", 1)],
    )
    findings = {f.node: f for f in lint(path, "tensorrt").findings}
    assert findings["det0"].op == "Det" and "unsupported" in findings["det0"].reason
    assert findings["mine"].op == "MyOp" and findings["mine"].domain == "com.example"
    assert "plugin named 'MyOp'" in findings["mine"].reason


def test_tensorrt_checks_dtypes_attributes_and_opset(tmp_path):
    path = _save(
        tmp_path / "m.onnx",
        [
            helper.make_node("Clip", ["i"], ["c"], name="clip_int"),
            helper.make_node("Relu", ["d"], ["r"], name="relu_double"),
            helper.make_node("Resize", ["x", "", "scales"], ["z"], name="cubic", mode="cubic"),
            helper.make_node("MaxPool", ["x"], ["p"], name="dilated", kernel_shape=[2, 2], dilations=[2, 2]),
        ],
        [("i", TensorProto.INT32, [4]), ("d", TensorProto.DOUBLE, [4]),
         ("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [("c", TensorProto.INT32, [4]), ("r", TensorProto.DOUBLE, [4]),
         ("z", TensorProto.FLOAT, [1, 1, 16, 16]), ("p", TensorProto.FLOAT, [1, 1, 6, 6])],
        initializers=[helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])],
    )
    findings = {f.node: f.reason for f in lint(path, "tensorrt").findings}
    assert findings["clip_int"] == "input 'i' is INT32; TensorRT supports Clip for FP32, FP16, BF16"
    assert "relu_double" not in findings  # TensorRT casts DOUBLE down to FLOAT
    assert "mode = 'cubic'" in findings["cubic"]
    assert "dilations = [2, 2]" in findings["dilated"]

    too_new = _save(tmp_path / "o21.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                    [("x", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])], opset=21)
    (model_level,) = lint(too_new, "tensorrt").findings
    assert model_level.node == "" and "opset 21" in model_level.reason and "9 to 20" in model_level.reason


def test_model_local_functions_are_expanded(tmp_path):
    body = helper.make_function(
        "com.example", "MyRelu", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
        [helper.make_opsetid("", 18)],
    )
    path = _save(
        tmp_path / "f.onnx", [helper.make_node("MyRelu", ["x"], ["y"], name="call", domain="com.example")],
        [("x", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])],
        functions=[body], extra_opsets=[("com.example", 1)],
    )
    assert lint(path, "tensorrt").ok
    config = tmp_path / "ops.config"
    config.write_text("ai.onnx;18;Relu\n")
    assert lint(path, "ort-mobile", config).ok


def test_ort_mobile_flags_an_op_missing_from_the_config(tmp_path, students):
    config = tmp_path / "required_operators.config"
    config.write_text("# made by hand\nai.onnx;18;Conv,MaxPool,Relu,Reshape\n")
    result = lint(students["cnn"]["fp32"], "ort-mobile", config)
    assert str(config) in result.reference
    (finding,) = result.findings
    assert finding.op == "Gemm" and finding.domain == "ai.onnx"
    assert "not in the reduced build's operators" in finding.reason
    config.write_text(f"ai.onnx;18;{STUDENT_OPS}\n")
    assert lint(students["cnn"]["fp32"], "ort-mobile", config).ok


def test_ort_mobile_default_is_the_installed_runtimes_cpu_kernels(tmp_path, students):
    result = lint(students["cnn"]["fp32"], "ort-mobile")
    assert result.ok and "CPU kernels of ONNX Runtime" in result.reference
    assert lint(students["cnn"]["int8"], "ort-mobile").ok
    path = _save(tmp_path / "u.onnx", [helper.make_node("NoSuchOp", ["x"], ["y"], name="odd", domain="com.example")],
                 [("x", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])], extra_opsets=[("com.example", 1)])
    (finding,) = lint(path, "ort-mobile").findings
    assert finding.node == "odd" and "no CPU kernel" in finding.reason


def test_ort_mobile_config_reduces_types(tmp_path):
    path = _save(tmp_path / "h.onnx", [helper.make_node("Relu", ["x"], ["y"], name="half")],
                 [("x", TensorProto.FLOAT16, [2])], [("y", TensorProto.FLOAT16, [2])], opset=15)
    config = tmp_path / "ops.config"
    config.write_text("!globally_allowed_types;float,int8_t,uint8_t\nai.onnx;15;Relu\n")
    findings = lint(path, "ort-mobile", config).findings
    assert {f.node for f in findings} == {"", "half"}
    assert all("float16" in f.reason and "keeps float, uint8, int8" in f.reason for f in findings)


def test_bad_input_raises_user_error(tmp_path, students):
    with pytest.raises(UserError, match="coreml, litert, litert-micro, ort-mobile, tensorrt"):
        lint(students["mlp"]["fp32"], "snpe")
    with pytest.raises(UserError, match=r"the coreml linter checks \.mlpackage files, not mlp\.onnx"):
        lint(students["mlp"]["fp32"], "coreml")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(students["mlp"]["fp32"].read_bytes()[:200])
    for runtime in runtimes(".onnx"):
        with pytest.raises(UserError, match="not a valid ONNX file"):
            lint(truncated, runtime)
    with pytest.raises(UserError, match="ort-mobile only"):
        lint(students["mlp"]["fp32"], "tensorrt", tmp_path / "x.config")
    with pytest.raises(UserError, match="does not exist"):
        lint(students["mlp"]["fp32"], "ort-mobile", tmp_path / "missing.config")
    bad = tmp_path / "bad.config"
    bad.write_text("ai.onnx;eighteen;Relu\n")
    with pytest.raises(UserError, match="not a required-operators config"):
        lint(students["mlp"]["fp32"], "ort-mobile", bad)


def test_a_folder_is_not_a_model(tmp_path):
    with pytest.raises(UserError, match="is a folder: give the .onnx file in it to lint"):
        lint(tmp_path, "tensorrt")
