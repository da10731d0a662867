import typing

import pytest
from pydantic import BaseModel

from edgedistill.config import RunConfig, load_config
from edgedistill.errors import UserError
from edgedistill.examples.digits import config_path

BASE = """
[teacher]
factory = "conftest:tiny_cnn"

[[tiers]]
name = "a"
budget = { params = "50%" }
"""


def _write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def _error(path) -> str:
    with pytest.raises(UserError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def test_shipped_example_validates_with_three_tiers():
    cfg = load_config(config_path())
    assert isinstance(cfg, RunConfig)
    assert [t.name for t in cfg.tiers] == ["half", "fifth", "twentieth"]
    assert cfg.teacher.factory == "edgedistill.examples.digits:teacher" and cfg.teacher.train
    assert cfg.data.source == "digits"
    assert cfg.distill.epochs == 60 and cfg.teacher_training.epochs == 40
    assert cfg.tiers[2].budget.bytes is not None


def test_minimal_config_gets_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.name == "run" and cfg.seed == 0
    assert cfg.tiers[0].student.kind == "prune"
    assert cfg.teacher_training.alpha == 0.0


def test_missing_file_raises_user_error(tmp_path):
    msg = _error(tmp_path / "absent.toml")
    assert "absent.toml" in msg and "does not exist" in msg


def test_malformed_toml_raises_user_error(tmp_path):
    path = _write(tmp_path, BASE + "\n[distill\nepochs = 3\n")
    msg = _error(path)
    assert "TOML" in msg and str(path) in msg


@pytest.mark.parametrize(
    "extra,expect",
    [
        ("[distill]\nepoch = 3\n", ["distill.epoch", "unknown key"]),
        ('[distill]\nepochs = "many"\n', ["distill.epochs", "many"]),
        ("[distill]\nepochs = 0\n", ["distill.epochs"]),
        ("[data]\nchannels = 2\n", ["data.channels"]),
        ('[measure]\nruns = "fast"\n', ["measure.runs"]),
        ("bogus = 1\n", ["bogus"]),
    ],
)
def test_bad_section_values_name_the_key(tmp_path, extra, expect):
    # top-level keys must come before the first table
    text = extra + BASE if extra.startswith("bogus") else BASE + extra
    path = _write(tmp_path, text)
    msg = _error(path)
    assert str(path) in msg
    for part in expect:
        assert part in msg


def test_bad_budget_string_names_the_key(tmp_path):
    path = _write(tmp_path, BASE.replace('"50%"', '"lots"'))
    msg = _error(path)
    assert "tiers.0.budget.params" in msg and "lots" in msg


def test_duplicate_tier_names_raise_user_error(tmp_path):
    text = BASE + '\n[[tiers]]\nname = "a"\nbudget = { params = "10%" }\n'
    msg = _error(_write(tmp_path, text))
    assert "tiers" in msg and "unique" in msg and "a" in msg


@pytest.mark.parametrize(
    "text",
    [
        '[teacher]\nfactory = "conftest:tiny_cnn"\n',
        'tiers = []\n[teacher]\nfactory = "conftest:tiny_cnn"\n',
    ],
    ids=["absent", "empty"],
)
def test_no_tiers_raise_user_error(tmp_path, text):
    assert "tiers" in _error(_write(tmp_path, text))


def test_missing_teacher_raises_user_error(tmp_path):
    msg = _error(_write(tmp_path, '[[tiers]]\nname = "a"\nbudget = { params = "50%" }\n'))
    assert "teacher" in msg and "missing" in msg


def test_unknown_student_key_names_the_key(tmp_path):
    text = BASE.replace('budget = { params = "50%" }', 'budget = { params = "50%" }\nstudent = { kind = "prune", keep = 0.3 }')
    msg = _error(_write(tmp_path, text))
    assert "tiers.0.student" in msg and "keep" in msg


def _models_in(annotation) -> list[type[BaseModel]]:
    """Pydantic model classes anywhere in a field annotation (unions, tuples, Annotated...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _all_fields():
    seen, queue, fields = set(), [RunConfig], []
    while queue:
        model = queue.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            fields.append((f"{model.__name__}.{name}", info))
            queue += _models_in(info.annotation)
    return seen, fields


def test_field_walk_reaches_every_section():
    seen, _ = _all_fields()
    names = {m.__name__ for m in seen}
    teachers = {"FactoryTeacher", "Pt2Teacher", "OnnxFileTeacher", "RecordedTeacher", "QueryTeacher", "HFTeacher"}
    assert teachers | {"RunConfig", "DataConfig", "TierConfig", "Budget", "DistillConfig",
            "ExportConfig", "QuantizeConfig", "MeasureConfig", "Prune", "Scale", "Custom"} <= names


def test_every_config_field_has_a_description():
    _, fields = _all_fields()
    missing = sorted(name for name, info in fields if not info.description)
    assert missing == []


BAD_NAMES = ["../../x", "", "..", ".hidden", "a" * 65, "a/b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_run_name_must_be_one_plain_folder_name(tmp_path, name):
    msg = _error(_write(tmp_path, f"name = {name!r}\n" + BASE))
    assert "name:" in msg


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_tier_name_must_be_one_plain_folder_name(tmp_path, name):
    msg = _error(_write(tmp_path, BASE.replace('name = "a"', f"name = {name!r}")))
    assert "tiers.0.name" in msg


def test_names_at_the_limits_are_kept(tmp_path):
    cfg = load_config(_write(tmp_path, f'name = "{"r" * 64}"\n' + BASE.replace('name = "a"', 'name = "a.b-c_1"')))
    assert cfg.name == "r" * 64 and cfg.tiers[0].name == "a.b-c_1"


@pytest.mark.parametrize("val, calib", [(0.6, 0.4), (0.7, 0.5), (0.9, 0.1)])
def test_fractions_that_leave_nothing_to_train_on_name_both_fields(tmp_path, val, calib):
    msg = _error(_write(tmp_path, BASE + f"[data]\nval_fraction = {val}\ncalib_fraction = {calib}\n"))
    assert "val_fraction" in msg and "calib_fraction" in msg and "less than 1" in msg


@pytest.mark.parametrize(
    "extra, where",
    [
        ("[distill]\nepochs = true\n", "distill.epochs"),
        ("[distill]\nweight_decay = false\n", "distill.weight_decay"),
        ("[measure]\nruns = true\n", "measure.runs"),
        ("[data]\nimage_size = [true, 8]\n", "data.image_size.0"),
        ('[[tiers]]\nname = "b"\nbudget = { latency_ms = { host-cpu = true } }\n', "tiers.1.budget.latency_ms.host-cpu"),
    ],
)
def test_a_boolean_is_not_taken_as_a_number(tmp_path, extra, where):
    msg = _error(_write(tmp_path, BASE + extra))
    assert f"{where}: a boolean" in msg


def test_toml_ints_serve_for_float_fields_and_bools_for_bool_fields(tmp_path):
    cfg = load_config(_write(tmp_path, BASE + "[distill]\nlr = 1\ntemperature = 2\n[export]\nsimplify = false\n"))
    assert cfg.distill.lr == 1.0 and cfg.distill.temperature == 2.0 and cfg.export.simplify is False


def test_a_bytes_budget_in_b_is_bytes(tmp_path):
    cfg = load_config(_write(tmp_path, BASE.replace('{ params = "50%" }', '{ bytes = "1B", peak_memory = "2 b" }')))
    assert cfg.tiers[0].budget.bytes.value == 1 and cfg.tiers[0].budget.peak_memory.value == 2
    assert cfg.tiers[0].budget_text() == "bytes <= 1 B, peak memory <= 2 B"


@pytest.mark.parametrize("given", ["1B", "7b", "5KB"])
def test_a_count_budget_says_which_suffixes_it_takes(tmp_path, given):
    msg = _error(_write(tmp_path, BASE.replace('"50%"', f'"{given}"')))
    assert "tiers.0.budget.params" in msg and 'a count takes k, M or G (a billion is "1G"' in msg


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_a_latency_budget_is_positive_and_finite(tmp_path, value):
    msg = _error(_write(tmp_path, BASE.replace('{ params = "50%" }', f"{{ latency_ms = {{ host-cpu = {value} }} }}")))
    assert "positive, finite milliseconds" in msg


def test_a_key_of_the_users_own_stays_on_one_line(tmp_path):
    msg = _error(_write(tmp_path, '[addresses]\n"pixel\\n8" = 3\n' + BASE))
    assert "addresses.pixel\\n8" in msg
