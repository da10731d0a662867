"""The query-only teacher: the protocol, the answer cache, the budget, and commands that misbehave."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from edgedistill.errors import UserError
from edgedistill.query import PROTOCOL, QueryTeacherConfig, decode_payload, encode_frame, query_teacher, serve

MISSING = ("no-such-teacher-client",)  # a command that would fail if it were started


def children() -> set[int]:
    """Pids of this process's children, zombies included (read from /proc)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while we looked
        if ppid == os.getpid():
            pids.add(int(stat.parent.name))
    return pids


@pytest.fixture(autouse=True)
def no_child_left_behind():
    """Every test ends with each command it started stopped and reaped."""
    before = children()
    yield
    assert children() == before


def onnx_client(model: Path, count_file: Path) -> tuple[str, ...]:
    """The example client serving `model`, logging each request's size to `count_file`."""
    return (sys.executable, "-m", "edgedistill.examples.query_client", str(model), "--count-file", str(count_file))


def script_client(tmp_path: Path, body: str) -> tuple[str, ...]:
    """A test client: `body` run as a script with numpy, time, sys and `serve` imported."""
    script = tmp_path / "client.py"
    script.write_text("import sys, time\nimport numpy as np\nfrom edgedistill.query import serve\n" + body + "\n")
    return (sys.executable, str(script))


def counts(count_file: Path) -> list[int]:
    """The size of each request the example client answered."""
    return [int(n) for n in count_file.read_text().split()] if count_file.exists() else []


def direct(model: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_answers_match_a_direct_call_and_no_input_is_asked_twice(tmp_path, mlp_onnx, digits_xy):
    x, count, cache = digits_xy[0], tmp_path / "count.txt", tmp_path / "queries"
    cfg = QueryTeacherConfig(command=onnx_client(mlp_onnx, count), max_queries=1000, batch_size=128)
    steps = []

    first = query_teacher(cfg, x[:300], cache, progress=lambda done, total: steps.append((done, total)))
    np.testing.assert_allclose(first.outputs, direct(mlp_onnx, x[:300]), rtol=1e-5, atol=1e-6)
    assert first.answered.all() and not first.stopped_by_budget
    assert (first.sent_now, first.used_total) == (300, 300)
    assert counts(count) == [128, 128, 44]
    assert steps == [(128, 300), (256, 300), (300, 300)]
    assert first.message == "300 inputs answered, 300 queries sent now; 300 of 1,000 queries used"

    (cache / ".batch-0123.npz.tmp").write_bytes(b"half a file")  # what a crash mid-write leaves: ignored
    second = query_teacher(cfg, x[200:500], cache)
    np.testing.assert_allclose(second.outputs, direct(mlp_onnx, x[200:500]), rtol=1e-5, atol=1e-6)
    assert (second.sent_now, second.used_total, sum(counts(count))) == (200, 500, 500)

    # Everything is answered: the command is not even started.
    third = query_teacher(cfg.model_copy(update={"command": MISSING}), x[:500][::-1], cache)
    assert third.sent_now == 0 and third.answered.all()
    np.testing.assert_array_equal(third.outputs[::-1][:300], first.outputs)


def test_duplicates_within_the_inputs_are_asked_once(tmp_path, mlp_onnx, digits_xy):
    x, count = digits_xy[0][:40], tmp_path / "count.txt"
    cfg = QueryTeacherConfig(command=onnx_client(mlp_onnx, count), max_queries=40)
    result = query_teacher(cfg, np.concatenate([x, x[::-1], x[5:10]]), tmp_path / "queries")
    assert counts(count) == [40] and result.sent_now == 40 and result.answered.all()
    np.testing.assert_array_equal(result.outputs[40:80], result.outputs[:40][::-1])
    np.testing.assert_array_equal(result.outputs[80:], result.outputs[5:10])


def test_the_budget_is_held_exactly(tmp_path, mlp_onnx, digits_xy):
    x, count, cache = digits_xy[0][:100], tmp_path / "count.txt", tmp_path / "queries"
    cfg = QueryTeacherConfig(command=onnx_client(mlp_onnx, count), max_queries=70, batch_size=32)

    result = query_teacher(cfg, x, cache)
    assert result.stopped_by_budget and (result.sent_now, result.used_total) == (70, 70)
    assert result.answered[:70].all() and not result.answered[70:].any()
    assert np.isnan(result.outputs[70:]).all()
    assert counts(count) == [32, 32, 6]
    assert result.message == (
        "70 of 70 queries used; 30 inputs left unanswered: query budget reached (raise teacher.max_queries to ask for them)"
    )

    rerun = query_teacher(cfg.model_copy(update={"command": MISSING}), x, cache)
    assert rerun.stopped_by_budget and rerun.sent_now == 0 and rerun.answered.sum() == 70

    more = query_teacher(cfg.model_copy(update={"max_queries": 100}), x, cache)
    assert not more.stopped_by_budget and more.answered.all() and more.sent_now == 30
    assert sum(counts(count)) == 100


def test_an_interrupted_run_keeps_its_answers_and_the_rerun_asks_only_the_rest(tmp_path, mlp_onnx, digits_xy):
    x, count, cache = digits_xy[0][:100], tmp_path / "count.txt", tmp_path / "queries"
    flaky = script_client(tmp_path, """
requests = 0
def answer(x):
    global requests
    requests += 1
    if requests == 3:
        sys.exit("model server went away")
    return np.zeros((len(x), 10))
serve(answer, outputs=10)
""")
    cfg = QueryTeacherConfig(command=flaky, max_queries=1000, batch_size=32)
    with pytest.raises(UserError, match="exited with status 1 before answering request 3 .*model server went away") as err:
        query_teacher(cfg, x, cache)
    assert "64 answers are kept" in str(err.value) and "\n" not in str(err.value)
    assert len(list(cache.glob("batch-*.npz"))) == 2

    rerun = query_teacher(cfg.model_copy(update={"command": onnx_client(mlp_onnx, count)}), x, cache)
    assert counts(count) == [32, 4] and rerun.answered.all()
    assert rerun.used_total == 96 + 36  # the 3rd request was sent, so it counts though unanswered
    assert (rerun.outputs[:64] == 0).all()  # the first client's answers, kept, not asked again
    np.testing.assert_allclose(rerun.outputs[64:], direct(mlp_onnx, x[64:]), rtol=1e-5, atol=1e-6)


def test_a_command_that_hangs_is_stopped_after_the_timeout(tmp_path, digits_xy):
    hangs = script_client(tmp_path, "serve(lambda x: time.sleep(60), outputs=10)")
    cfg = QueryTeacherConfig(command=hangs, max_queries=10, timeout_s=1)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"gave no answer to request 1 \(10 inputs\) within 1 s"):
        query_teacher(cfg, digits_xy[0][:10], tmp_path / "queries")
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    "answer, error",
    [
        ("np.zeros((len(x), 3))", r"shape \(10, 3\), expected \(10, 10\)"),
        ("np.zeros((len(x) - 1, 10))", r"shape \(9, 10\), expected \(10, 10\)"),
        ("np.zeros(len(x))", r"shape \(10,\), expected \(10, 10\)"),
        ("np.full((len(x), 10), np.inf)", "non-finite values"),
    ],
)
def test_a_wrong_answer_is_refused(tmp_path, digits_xy, answer, error):
    cfg = QueryTeacherConfig(command=script_client(tmp_path, f"serve(lambda x: {answer}, outputs=10)"), max_queries=10)
    with pytest.raises(UserError, match=error):
        query_teacher(cfg, digits_xy[0][:10], tmp_path / "queries")
    assert not list((tmp_path / "queries").glob("batch-*.npz"))


@pytest.mark.parametrize(
    "body, error",
    [
        ("print('{\"protocol\": \"edgedistill.query/2\", \"outputs\": 10}', flush=True)",
         "speaks protocol 'edgedistill.query/2' but edgedistill speaks 'edgedistill.query/1'"),
        ("print('{\"error\": \"no GPU here\"}', flush=True)", "cannot serve these inputs: no GPU here"),
        ("print('Loading model...', flush=True); time.sleep(30)",
         "answered the handshake with 'Loading model...', not a JSON line"),
        ("sys.exit('cannot load model.onnx')",
         "exited with status 1 before answering the handshake; its stderr ends: cannot load model.onnx"),
    ],
    ids=["other-protocol", "client-error", "stdout-noise", "exits"],
)
def test_a_wrong_handshake_is_one_line(tmp_path, digits_xy, body, error):
    cfg = QueryTeacherConfig(command=script_client(tmp_path, body), max_queries=10)
    with pytest.raises(UserError, match=error):
        query_teacher(cfg, digits_xy[0][:10], tmp_path / "queries")


def test_an_interrupt_stops_the_command_and_keeps_the_answers(tmp_path, digits_xy):
    cache = tmp_path / "queries"
    cfg = QueryTeacherConfig(
        command=script_client(tmp_path, "serve(lambda x: np.ones((len(x), 10)), outputs=10)"), max_queries=10, batch_size=4
    )

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        query_teacher(cfg, digits_xy[0][:10], cache, progress=interrupt)
    assert len(list(cache.glob("batch-*.npz"))) == 1  # and the fixture checks the command was ended


def test_a_print_in_the_clients_code_does_not_break_a_frame(tmp_path, digits_xy):
    chatty = script_client(tmp_path, "serve(lambda x: print('got', x.shape) or np.ones((len(x), 10)), outputs=10)")
    result = query_teacher(QueryTeacherConfig(command=chatty, max_queries=10), digits_xy[0][:10], tmp_path / "queries")
    assert result.answered.all()


def test_a_command_that_cannot_start_is_named(tmp_path, digits_xy):
    with pytest.raises(UserError, match="'no-such-teacher-client' was not found"):
        query_teacher(QueryTeacherConfig(command=MISSING, max_queries=10), digits_xy[0][:10], tmp_path / "queries")
    script = tmp_path / "client.py"
    script.write_text("print('hello')\n")  # not executable
    with pytest.raises(UserError, match="is not executable"):
        query_teacher(QueryTeacherConfig(command=(str(script),), max_queries=10), digits_xy[0][:10], tmp_path / "queries")


def test_serve_speaks_the_protocol():
    x = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    header = json.dumps({"protocol": PROTOCOL, "input_shape": [2, 2], "input_dtype": "float32", "max_batch": 3})
    stdin, stdout = io.BytesIO(header.encode() + b"\n" + encode_frame(x)), io.BytesIO()
    serve(lambda batch: batch.reshape(len(batch), -1)[:, :2], outputs=2, stdin=stdin, stdout=stdout)
    stdout.seek(0)
    assert json.loads(stdout.readline()) == {"protocol": PROTOCOL, "outputs": 2}
    length = int.from_bytes(stdout.read(8), "little")
    np.testing.assert_array_equal(decode_payload(stdout.read(length)), [[0, 1], [4, 5], [8, 9]])
    assert stdout.read() == b""


def test_the_config_is_checked():
    with pytest.raises(ValidationError):
        QueryTeacherConfig(command=(), max_queries=10)
    with pytest.raises(ValidationError):
        QueryTeacherConfig(command=("client",), max_queries=0)
    with pytest.raises(ValidationError):
        QueryTeacherConfig(command=("client",), max_queries=10, retries=3)
