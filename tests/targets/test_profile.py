import pytest

from edgedistill.errors import UserError
from edgedistill.targets.profile import builtin_names, load_target


def test_the_issue_profiles_ship():
    assert {"host-cpu", "raspberry-pi-5", "pixel-8", "galaxy-s24", "jetson-orin-nano", "jetson-agx-orin", "iphone-15-pro"} <= set(builtin_names())


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_profile_loads_and_wants_something_runnable(name):
    target = load_target(name)
    assert target.name == name
    assert target.artifacts
    if target.runtime == "ort-mobile":
        # Phones run ONNX Runtime Mobile's .ort, and ExecuTorch's .pte and LiteRT's .tflite beside it.
        formats = {a.format for a in target.artifacts}
        assert "ort" in formats and formats <= {"ort", "pte", "tflite"}
    if target.runtime == "litert-micro":
        assert {(a.format, a.precision) for a in target.artifacts} == {("tflite", "int8")}
    if target.runtime == "tensorrt":
        assert "tensorrt" in {a.format for a in target.artifacts}
    if target.runtime == "coreml":
        assert {a.format for a in target.artifacts} == {"mlpackage"}


def test_phones_want_int8_then_fp32_of_each_runtime_and_jetsons_fp16_and_int8_engines():
    # Both precisions, so the run deploys whichever is faster there and holds the score.
    for phone in ("pixel-8", "galaxy-s24"):
        assert [(a.format, a.precision) for a in load_target(phone).artifacts] == [
            ("ort", "int8"), ("ort", "fp32"), ("pte", "int8"), ("pte", "fp32"), ("tflite", "int8"), ("tflite", "fp32"),
        ]
    jetson = {(a.format, a.precision) for a in load_target("jetson-orin-nano").artifacts}
    assert {("tensorrt", "fp16"), ("tensorrt", "int8"), ("onnx", "fp16")} <= jetson


def test_the_iphone_ships_core_ml_packages_and_is_predicted_from_the_neural_engines_figures():
    iphone = load_target("iphone-15-pro")
    assert [(a.format, a.precision) for a in iphone.artifacts] == [("mlpackage", "fp16"), ("mlpackage", "int8")]
    assert (iphone.kind, iphone.runtime, iphone.runner) == ("npu", "coreml", "none")  # no runner reaches it: predicted
    specs = iphone.specs
    assert specs.peak_gflops["int8"] == 35000.0 and specs.peak_gflops["fp16"] == 17500.0  # Apple's 35 TOPS
    assert "apple.com/newsroom" in specs.sources["peak_gflops"] and "assumed" in specs.sources["bandwidth_gbs"]


def test_the_microcontroller_has_flash_and_sram_budgets_with_sources():
    mcu = load_target("stm32h743")
    assert (mcu.kind, mcu.runtime, mcu.runner) == ("mcu", "litert-micro", "none")
    specs = mcu.specs
    assert (specs.flash_bytes, specs.sram_bytes) == (2 * 1024 * 1024, 512 * 1024)
    assert "st.com" in specs.sources["flash_bytes"] and "AXI SRAM" in specs.sources["sram_bytes"]
    # Phones and boards without them judge no device memory.
    assert load_target("pixel-8").specs.flash_bytes is None


def test_a_user_profile_loads_from_a_path(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(
        'name = "my-board"\ndescription = "a board"\nkind = "cpu"\nruntime = "onnxruntime"\n'
        'execution_provider = "CPUExecutionProvider"\nartifacts = [{ format = "onnx", precision = "int8" }]\n'
    )
    assert load_target(str(path)).name == "my-board"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name = [", "not valid TOML"),
        ('name = "x"\n', "description"),
        (
            'name = "x"\ndescription = "d"\nkind = "tpu"\nruntime = "onnxruntime"\nexecution_provider = "CPU"\n'
            'artifacts = [{ format = "onnx", precision = "int8" }]\n',
            "kind",
        ),
    ],
)
def test_a_bad_user_profile_is_one_line(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=expected) as exc:
        load_target(str(path))
    assert "\n" not in str(exc.value)


def test_an_unknown_target_lists_the_known_ones():
    with pytest.raises(UserError, match="pixel-8"):
        load_target("pixel-9000")


@pytest.mark.parametrize("name", builtin_names())
def test_every_profile_has_specs_with_a_source_for_each_figure(name):
    specs = load_target(name).specs
    assert specs is not None
    assert set(specs.peak_gflops) == {"fp32", "fp16", "int8"}
    assert all(v > 0 for v in specs.peak_gflops.values())
    assert {"cores", "peak_gflops", "bandwidth_gbs", "memory_bytes"} <= set(specs.sources)
    assert all(specs.sources.values())


def test_host_cpu_specs_come_from_this_machine():
    import os

    specs = load_target("host-cpu").specs
    assert specs.cores == len(os.sched_getaffinity(0))
    assert "this machine" in specs.sources["cores"] and "assumed" in specs.sources["bandwidth_gbs"]
    assert specs.peak_gflops["int8"] >= 2 * specs.peak_gflops["fp32"]
