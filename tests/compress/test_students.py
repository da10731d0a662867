import pytest
import torch
from torch import nn

import edgedistill.hf.students  # noqa: F401  registers the hf generator, so the sweep below sees every generator
from conftest import INPUT_SHAPE, tiny_cnn
from edgedistill.compress.students import Custom, Family, HFShrink, Prune, Scale, generators, handler_for
from edgedistill.errors import UserError
from edgedistill.importing import import_object

EXAMPLES = {
    Prune: Prune(),
    Scale: Scale(family="conftest:tiny_cnn"),
    Custom: Custom(factory="conftest:tiny_mlp"),
    Family: Family(outputs=10),
    HFShrink: HFShrink(),
}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("config_type", generators(), ids=lambda t: t.__name__)
def test_every_generator_makes_a_student_with_the_teachers_output_shape(config_type, cnn, request):
    cfg = EXAMPLES[config_type]
    handler = handler_for(cfg)
    low, high = handler.knob_range(cfg)
    assert 0 < low <= high
    teacher, x, shape = cnn, torch.randn(2, *INPUT_SHAPE), INPUT_SHAPE
    if config_type is HFShrink:
        from edgedistill.hf.model import load_hf

        teacher, _ = load_hf(request.getfixturevalue("bert_folder"))
        x, shape = torch.randint(5, 40, (2, 12)), (12,)
    for knob in (low, high):
        student = handler.make(cfg, teacher, knob, shape)
        with torch.no_grad():
            assert student(x).shape == teacher(x).shape


def test_prune_leaves_the_teacher_alone_and_shrinks_params_about_as_keep_squared(cnn):
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    student = handler_for(Prune()).make(Prune(), cnn, 0.5, INPUT_SHAPE)
    assert cnn.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    # between keep² (every layer halved on both sides) and keep (the head halved on one side only)
    share = _params(student) / _params(cnn)
    assert 0.25 < share < 0.5
    assert student.head[1].out_features == cnn.head[1].out_features
    assert student.features[0].out_channels == 4


def test_pruned_student_starts_from_teacher_weights(cnn):
    student = handler_for(Prune()).make(Prune(), cnn, 0.5, INPUT_SHAPE)
    teacher_filters = cnn.features[0].weight
    for kept in student.features[0].weight:
        assert any(torch.equal(kept, f) for f in teacher_filters)


def test_prune_is_monotone_down_to_one_channel(cnn):
    handler = handler_for(Prune())
    sizes = [_params(handler.make(Prune(), cnn, k, INPUT_SHAPE)) for k in (0.01, 0.1, 0.3, 0.6, 1.0)]
    assert sizes == sorted(sizes) and sizes[-1] == _params(cnn)
    assert handler.make(Prune(), cnn, 0.01, INPUT_SHAPE).features[0].out_channels == 1


def test_prune_ignore_keeps_the_named_layer_and_rejects_unknown_names(cnn):
    student = handler_for(Prune()).make(Prune(ignore=["features.0"]), cnn, 0.5, INPUT_SHAPE)
    assert student.features[0].out_channels == 8 and student.features[3].out_channels == 8
    with pytest.raises(UserError, match="features.9"):
        handler_for(Prune()).make(Prune(ignore=["features.9"]), cnn, 0.5, INPUT_SHAPE)


def test_scale_builds_the_family_at_the_knob_width(cnn):
    student = handler_for(Scale(family="conftest:tiny_cnn")).make(Scale(family="conftest:tiny_cnn"), cnn, 0.5, INPUT_SHAPE)
    assert student.features[0].out_channels == 4


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (Scale(family="conftest:tiny_mlp"), "width"),
        (Scale(family="conftest:INPUT_SHAPE"), "not a function"),
        (Custom(factory="conftest:tiny_cnn_missing"), "no attribute"),
        (Custom(factory="torch:zeros_like"), "arguments|returned"),
    ],
)
def test_bad_factories_are_user_errors(cfg, match, cnn):
    with pytest.raises(UserError, match=match):
        handler_for(cfg).make(cfg, cnn, 1.0, INPUT_SHAPE)


def test_custom_factory_must_return_a_module(cnn):
    cfg = Custom(factory="conftest:pytest")
    with pytest.raises(UserError, match="returned|not a function"):
        handler_for(cfg).make(cfg, cnn, 1.0, INPUT_SHAPE)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
        ("conftest:no_such_factory", "no attribute 'no_such_factory'"),
        ("conftest.tiny_cnn", "not of the form"),
        ("conftest:", "not of the form"),
    ],
)
def test_import_object_errors_are_one_line(spec, match):
    with pytest.raises(UserError, match=match) as err:
        import_object(spec)
    assert "\n" not in str(err.value)


def test_import_object_finds_the_factory():
    assert import_object("conftest:tiny_cnn") is tiny_cnn


@pytest.mark.parametrize(
    ("cfg", "input_shape", "family_type", "output_shape"),
    [
        (Family(outputs=10), INPUT_SHAPE, "ConvNet", (10,)),
        (Family(outputs=(10,)), INPUT_SHAPE, "ConvNet", (10,)),
        (Family(outputs=[2, 8, 8]), INPUT_SHAPE, "DenseNet", (2, 8, 8)),  # a TOML list is a shape
        (Family(outputs=3), (2, 16), "ConvNet1d", (3,)),
        (Family(outputs=(1, 8)), (2, 16), "DenseNet", (1, 8)),
        (Family(name="mlp", outputs=(2, 4, 4)), INPUT_SHAPE, "MLP", (2, 4, 4)),
    ],
)
def test_family_builds_the_default_or_named_family_for_the_output_shape(cfg, input_shape, family_type, output_shape):
    student = handler_for(cfg).make(cfg, None, 0.1, input_shape)
    assert type(student).__name__ == family_type
    with torch.no_grad():
        assert student.eval()(torch.randn(2, *input_shape)).shape == (2, *output_shape)


def test_family_outputs_must_be_a_positive_size_or_shape():
    assert Family(outputs=[2, 8, 8]).outputs == (2, 8, 8)
    for bad in (0, (), (2, 0, 8)):
        with pytest.raises(ValueError):
            Family(outputs=bad)
    with pytest.raises(UserError, match="use family dense"):
        handler_for(Family()).make(Family(name="cnn", outputs=(2, 8, 8)), None, 0.5, INPUT_SHAPE)
    with pytest.raises(UserError, match="student.outputs"):
        handler_for(Family()).make(Family(), None, 0.5, INPUT_SHAPE)
