"""Core ML export: packages are built and checked by structure (Core ML predicts on macOS only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("coremltools", reason="coremltools is not installed: pip install -e '.[coreml]'")

from conftest import TinyCNN, tiny_cnn  # noqa: E402
from edgedistill.errors import Unmade, UserError  # noqa: E402
from edgedistill.export.coreml import available, check_package, export_coreml  # noqa: E402

SAMPLE = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)


@pytest.fixture(scope="module")
def wide_cnn() -> nn.Module:
    """A TinyCNN of ~29k weights: enough that int8 storage visibly beats fp16."""
    torch.manual_seed(0)
    return TinyCNN(width=32).eval()


@pytest.fixture(scope="module")
def packages(tmp_path_factory, wide_cnn):
    """The wide CNN exported at fp16 and int8, once for the module (each takes about a second)."""
    folder = tmp_path_factory.mktemp("coreml")
    return {p: export_coreml(wide_cnn, SAMPLE, p, folder / f"cnn-{p}.mlpackage") for p in ("fp16", "int8")}


def test_available_here():
    assert available() is None


def test_fp16_package_holds_conv_and_linear_in_fp16(packages):
    art = packages["fp16"]
    assert art.path.is_dir() and art.precision == "fp16"
    check = art.check
    assert check.ops["conv"] == 2 and check.ops["linear"] == 1 and check.ops["relu"] == 2
    assert check.weight_dtypes == ("fp16",)
    assert check.unsupported == ()
    assert check.spec_version >= 8  # iOS 17's spec version
    assert check.note.startswith("not run here")


def test_int8_package_has_int8_weights_and_is_smaller(packages):
    fp16, int8 = packages["fp16"].check, packages["int8"].check
    assert "int8" in int8.weight_dtypes
    # Every conv/linear weight went int8: one dequantize per weight tensor, the same compute ops.
    assert int8.ops["constexpr_affine_dequantize"] == 3
    assert {op: int8.ops[op] for op in ("conv", "linear")} == {op: fp16.ops[op] for op in ("conv", "linear")}
    assert int8.unsupported == ()
    assert int8.bytes < 0.7 * fp16.bytes


def test_interface_names_the_sample_shape(packages):
    for art in packages.values():
        assert art.check.inputs == ("x: 1x1x8x8 fp32",)
        assert len(art.check.outputs) == 1 and art.check.outputs[0].endswith(": 1x10 fp32")


def test_check_package_rereads_the_saved_package(packages):
    assert check_package(packages["int8"].path) == packages["int8"].check


def test_export_leaves_callers_model_alone_and_replaces_dst(tmp_path):
    model = tiny_cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dst = tmp_path / "m.mlpackage"
    dst.mkdir()
    (dst / "stale.txt").write_text("old")
    art = export_coreml(model, SAMPLE, "fp16", dst)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not (dst / "stale.txt").exists() and art.check.ops["conv"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]


def test_unknown_precision_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="fp16, int8"):
        export_coreml(tiny_cnn(), SAMPLE, "int4", tmp_path / "m.mlpackage")
    assert list(tmp_path.iterdir()) == []


class _Inverse(nn.Module):
    """A matrix inverse: coremltools lowers no linalg_inv on a non-constant input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(x[0, 0])


def test_unconvertible_model_leaves_nothing_behind(tmp_path):
    dst = tmp_path / "inv.mlpackage"
    eye = np.eye(8, dtype=np.float32)[None, None]  # invertible, so tracing itself succeeds
    with pytest.raises(Unmade, match="torch.export.*torch.jit.trace"):
        export_coreml(_Inverse(), eye, "fp16", dst)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_old_package_and_no_temp(tmp_path, monkeypatch):
    import coremltools as ct

    dst = tmp_path / "m.mlpackage"
    dst.mkdir()
    (dst / "keep.txt").write_text("old")

    def broken_save(self, path):
        (Path(path) / "partial").mkdir(parents=True)
        raise RuntimeError("disk went away")

    monkeypatch.setattr(ct.models.MLModel, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk went away"):
        export_coreml(tiny_cnn(), SAMPLE, "fp16", dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]
    assert (dst / "keep.txt").read_text() == "old"
