from pathlib import Path
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from conftest import tiny_cnn, tiny_mlp
from edgedistill.errors import UserError
from edgedistill.data.registry import INPUTS
from edgedistill.teachers import TEACHER_KINDS, load_teacher, parse_teacher


def _msg(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def test_factory_loads_module_in_eval_mode():
    # conftest:TinyCNN builds a module in training mode; load_teacher must switch it to eval
    model = load_teacher(parse_teacher(dict(factory="conftest:TinyCNN")))
    assert isinstance(model, nn.Module)
    assert not any(m.training for m in model.modules())


def test_factory_function_gives_working_teacher():
    model = load_teacher(parse_teacher(dict(factory="conftest:tiny_cnn")))
    assert isinstance(model, nn.Module) and not model.training
    torch.testing.assert_close(model(torch.ones(2, 1, 8, 8)), tiny_cnn()(torch.ones(2, 1, 8, 8)))


def test_weights_load_and_match(tmp_path):
    source = tiny_cnn()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.5)  # differ from the factory's seeded init
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = load_teacher(parse_teacher(dict(factory="conftest:tiny_cnn", weights="w.pt"), tmp_path))
    loaded = model.state_dict()
    assert loaded.keys() == source.state_dict().keys()
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(loaded[name], tensor)
    assert not model.training


def test_mismatched_weights_raise_user_error(tmp_path):
    torch.save(tiny_mlp().state_dict(), tmp_path / "mlp.pt")
    with pytest.raises(UserError) as exc:
        load_teacher(parse_teacher(dict(factory="conftest:tiny_cnn", weights=str(tmp_path / "mlp.pt"))))
    msg = _msg(exc)
    assert "mlp.pt" in msg and "conftest:tiny_cnn" in msg


def test_missing_weights_raise_user_error(tmp_path):
    with pytest.raises(UserError) as exc:
        load_teacher(parse_teacher(dict(factory="conftest:tiny_cnn", weights="absent.pt"), tmp_path))
    assert "absent.pt" in _msg(exc)


def test_weights_that_are_not_a_state_dict_raise_user_error(tmp_path):
    (tmp_path / "w.pt").write_text("not a checkpoint")
    with pytest.raises(UserError) as exc:
        load_teacher(parse_teacher(dict(factory="conftest:tiny_cnn", weights="w.pt"), tmp_path))
    assert "state dict" in _msg(exc)


def test_factory_returning_non_module_raises_user_error():
    with pytest.raises(UserError) as exc:
        load_teacher(parse_teacher(dict(factory="os:getcwd")))
    msg = _msg(exc)
    assert "os:getcwd" in msg and "str" in msg


@pytest.mark.parametrize(
    "spec,expect",
    [
        ("no_such_module_edgedistill:build", "cannot import"),
        ("conftest:no_such_factory", "no attribute"),
        ("conftest.tiny_cnn", "package.module:function"),
    ],
)
def test_bad_factory_spec_raises_user_error(spec, expect):
    with pytest.raises(UserError) as exc:
        load_teacher(parse_teacher(dict(factory=spec)))
    assert expect in _msg(exc)


@pytest.fixture(scope="module")
def pt2_file(tmp_path_factory):
    model = tiny_cnn()
    program = torch.export.export(model, (torch.randn(2, 1, 8, 8),))
    path = tmp_path_factory.mktemp("pt2") / "teacher.pt2"
    torch.export.save(program, str(path))
    return path, model


def test_pt2_loads_and_matches_the_module(pt2_file):
    path, model = pt2_file
    loaded = load_teacher(parse_teacher(dict(path=path.name), path.parent))
    assert isinstance(loaded, nn.Module)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_pt2_absolute_path_loads(pt2_file):
    path, model = pt2_file
    loaded = load_teacher(parse_teacher(dict(path=str(path))))
    x = torch.zeros(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("content", ["text", "state_dict"])
def test_non_pt2_file_raises_user_error(tmp_path, content):
    path = tmp_path / "teacher.pt2"
    if content == "text":
        path.write_text("hello")
    else:
        torch.save(tiny_cnn().state_dict(), path)
    with pytest.raises(UserError) as exc:
        load_teacher(parse_teacher(dict(path=str(path))))
    assert "torch.export" in _msg(exc)


@pytest.mark.parametrize("content", ["text", "truncated"])
def test_a_corrupt_pt2_is_one_line_and_logs_nothing(tmp_path, pt2_file, capfd, caplog, content):
    path = tmp_path / "teacher.pt2"
    data = pt2_file[0].read_bytes()
    path.write_bytes(b"not a program" if content == "text" else data[: len(data) // 2])
    with pytest.raises(UserError) as exc:
        load_teacher(parse_teacher({"path": str(path)}))
    assert "is not a torch.export program" in _msg(exc)
    # torch logs a traceback of each format it tried; the one line above is all the user sees.
    assert "Traceback" not in capfd.readouterr().err and "Traceback" not in caplog.text


def test_a_factory_that_raises_is_one_line():
    with pytest.raises(UserError) as exc:
        load_teacher(parse_teacher({"factory": "json:loads"}))  # called without its argument
    assert "teacher factory 'json:loads' raised TypeError (" in _msg(exc)
    assert isinstance(exc.value.__cause__, TypeError)  # --debug shows its traceback


def test_missing_pt2_raises_user_error(tmp_path):
    with pytest.raises(UserError) as exc:
        load_teacher(parse_teacher(dict(path="gone.pt2"), tmp_path))
    assert "gone.pt2" in _msg(exc)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"factory": "conftest:tiny_cnn", "path": "t.pt2"},
        {},
        {"path": "t.pt2", "weights": "w.pt"},
        {"path": "t.pt2", "train": True},
        {"factory": "conftest:tiny_cnn", "unknown": 1},
        {"path": "t.h5"},
        {"command": ["client"]},
        {"max_queries": 10, "factory": "conftest:tiny_cnn"},
        {"command": ["client"], "max_queries": 10, "path": "t.onnx"},
    ],
)
def test_teacher_config_rejects_bad_combinations(kwargs):
    with pytest.raises(ValidationError):
        parse_teacher(kwargs)


def test_teacher_config_accepts_one_source():
    assert parse_teacher(dict(factory="conftest:tiny_cnn")).kind == "factory"
    assert parse_teacher(dict(path="t.pt2")).kind == "pt2"


def test_paths_start_at_the_config_folder_once_it_loads(tmp_path):
    assert parse_teacher("t.pt2", tmp_path).path == str(tmp_path / "t.pt2")
    assert parse_teacher({"factory": "m:f", "weights": "w.pt"}, tmp_path).weights == str(tmp_path / "w.pt")
    assert parse_teacher({"command": ["client"], "max_queries": 5}, tmp_path).cwd == str(tmp_path)
    assert parse_teacher(str(tmp_path / "abs.onnx"), Path("/elsewhere")).path == str(tmp_path / "abs.onnx")


@pytest.mark.parametrize(
    "given, kind",
    [
        ("teacher.onnx", "onnx"),
        ("outputs.npz", "recorded"),
        ("model.pt2", "pt2"),
        ("pkg.models:build", "factory"),
        ({"command": ["python", "client.py"], "max_queries": 100}, "query"),
    ],
)
def test_a_teacher_is_given_as_a_string_or_a_table(given, kind):
    cfg = parse_teacher(given)
    assert cfg.kind == kind
    assert cfg.has_weights == (kind in ("factory", "pt2"))
    assert cfg.runnable == (kind in ("factory", "pt2", "onnx"))


def test_an_onnx_teacher_runs_with_its_size_from_the_graph(tmp_path, digits_xy):
    from edgedistill.export.onnx import export_onnx
    from edgedistill.teachers import onnx_footprint

    x, _ = digits_xy
    model = tiny_cnn()
    path = export_onnx(model, x[:2], x[:8], tmp_path / "t.onnx").path
    teacher = load_teacher(parse_teacher(str(path)))
    with torch.no_grad():
        torch.testing.assert_close(teacher(torch.from_numpy(x[:5])), model(torch.from_numpy(x[:5])), atol=1e-4, rtol=1e-4)
    fp = onnx_footprint(path, (1, 8, 8))
    # Batch norm is folded into the convolutions on export: the graph has the torch model's
    # parameters less the norms' own.
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert fp.params == sum(p.numel() for p in model.parameters()) - bn
    assert fp.macs > 0


def test_an_onnx_teacher_deep_copies_and_pickles_as_a_new_session_on_its_file(tmp_path, digits_xy):
    import copy
    import pickle

    from edgedistill.export.onnx import export_onnx

    x, _ = digits_xy
    path = export_onnx(tiny_cnn(), x[:2], x[:8], tmp_path / "t.onnx").path
    teacher = load_teacher(parse_teacher(str(path)))
    inputs = torch.from_numpy(x[:5])
    for other in (copy.deepcopy(teacher), pickle.loads(pickle.dumps(teacher))):
        assert other.path == teacher.path and other.session is not teacher.session
        assert torch.equal(other(inputs), teacher(inputs))


def test_recorded_and_query_teachers_cannot_be_run_on_new_inputs():
    with pytest.raises(UserError, match="cannot be run on new inputs"):
        load_teacher(parse_teacher("outputs.npz"))


_MINIMAL = {
    "factory": {"factory": "conftest:tiny_cnn"},
    "pt2": {"path": "t.pt2"},
    "onnx": {"path": "t.onnx"},
    "recorded": {"path": "t.npz"},
    "query": {"command": ["client"], "max_queries": 5},
    "hf": {"hf": "models/encoder"},
}


@pytest.mark.parametrize("kind_cls", TEACHER_KINDS, ids=lambda c: c.__name__)
def test_every_teacher_kind_parses_from_its_source_key_and_keys_without_paths(kind_cls, tmp_path):
    kind = kind_cls.model_fields["kind"].default
    teacher = parse_teacher(_MINIMAL[kind], tmp_path)
    assert type(teacher) is kind_cls and teacher.kind == kind and teacher.source
    assert parse_teacher({"kind": kind, **_MINIMAL[kind]}, tmp_path) == teacher
    assert not {"path", "weights", "cwd", "hf"} & set(teacher.identity())
    assert all(f.is_absolute() for f in teacher.files())
    assert teacher.inputs in INPUTS
    assert teacher.runnable or not teacher.has_weights


@pytest.mark.parametrize("body", ["def broken(:\n", "raise RuntimeError('no GPU found')\n"])
def test_a_factory_module_that_fails_as_it_loads_is_one_line(tmp_path, monkeypatch, body):
    (tmp_path / "badmodels.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError) as exc:
        load_teacher(parse_teacher({"factory": "badmodels:build"}))
    assert "importing 'badmodels' for 'badmodels:build' raised" in _msg(exc) and "fix that module" in _msg(exc)
