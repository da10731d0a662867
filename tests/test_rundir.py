import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgedistill.errors import UserError
from edgedistill.fileio import file_digest
from edgedistill.progress import Progress
from edgedistill.rundir import MANIFEST, Made, RunDir, StageId, input_key

from conftest import SaidProgress


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_atomic_writes_leave_no_temp_files(tmp_path):
    with RunDir(tmp_path) as rd:
        rd.write_text("a/b.txt", "hello")
        rd.write_bytes("c.bin", b"\x00\x01")
        rd.write_json("d.json", {"p": Path("x"), "t": (1, 2)})
        rd.save_torch("e.pt", {"k": 1})
        with rd.atomic("f.txt") as tmp:
            assert tmp.parent == tmp_path and tmp != rd.path("f.txt")
            tmp.write_text("via atomic")
    assert (tmp_path / "a" / "b.txt").read_text() == "hello"
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "d.json").read_text()) == {"p": "x", "t": [1, 2]}
    assert (tmp_path / "f.txt").read_text() == "via atomic"
    assert _temp_files(tmp_path) == []


def test_failed_write_keeps_previous_file_and_no_temp_file(tmp_path):
    with RunDir(tmp_path) as rd:
        rd.write_text("out.txt", "old")
        with pytest.raises(RuntimeError, match="boom"):
            with rd.atomic("out.txt") as tmp:
                tmp.write_text("half of the new")
                raise RuntimeError("boom")
        assert rd.path("out.txt").read_text() == "old"
    assert _temp_files(tmp_path) == []


def test_failed_first_write_leaves_nothing(tmp_path):
    with RunDir(tmp_path) as rd:
        with pytest.raises(ValueError):
            with rd.atomic("new.txt") as tmp:
                tmp.write_text("partial")
                raise ValueError
        assert not rd.path("new.txt").exists()
    assert _temp_files(tmp_path) == []


def test_finished_stage_is_seen_by_a_new_rundir(tmp_path):
    with RunDir(tmp_path) as rd:
        out = rd.write_text("model.onnx", "bytes")
        recorded = rd.finish("export", "k1", {"acc": 0.5, "file": rd.path("model.onnx")}, outputs=[out])
        assert recorded == {"acc": 0.5, "file": "model.onnx"}
        assert rd.finished("export", "k1") == recorded
    with RunDir(tmp_path) as rd:
        assert rd.finished("export", "k1") == {"acc": 0.5, "file": "model.onnx"}
        assert rd.finished("export", "k2") is None
        assert rd.finished("other", "k1") is None


def test_deleted_output_means_not_finished(tmp_path):
    with RunDir(tmp_path) as rd:
        keep = rd.write_text("keep.txt", "1")
        gone = rd.write_text("sub/gone.txt", "2")
        rd.finish("stage", "k", 1, outputs=[keep, gone])
    gone.unlink()
    with RunDir(tmp_path) as rd:
        assert rd.finished("stage", "k") is None


def test_force_forgets_stages(tmp_path):
    with RunDir(tmp_path) as rd:
        rd.finish("a", "k", "done")
    with RunDir(tmp_path, force=True) as rd:
        assert rd.finished("a", "k") is None
        rd.finish("b", "k", "again")
    with RunDir(tmp_path) as rd:
        assert rd.finished("a", "k") is None
        assert rd.finished("b", "k") == "again"


def test_lock_refuses_a_second_rundir_until_closed(tmp_path):
    first = RunDir(tmp_path)
    try:
        with pytest.raises(UserError) as exc:
            RunDir(tmp_path)
        msg = str(exc.value)
        assert "\n" not in msg and str(tmp_path) in msg
    finally:
        first.close()
    second = RunDir(tmp_path)
    second.close()


@pytest.mark.parametrize("under", [True, False])
def test_unwritable_root_raises_user_error(tmp_path, under):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")
    root = blocker / "run" if under else blocker
    with pytest.raises(UserError) as exc:
        RunDir(root)
    msg = str(exc.value)
    assert "\n" not in msg and str(root) in msg and "--out" in msg


@dataclass(frozen=True)
class _Cfg:
    path: Path
    sizes: tuple[int, ...]


def test_input_key_is_stable_and_sensitive():
    a = input_key({"lr": 0.1, "epochs": 3}, _Cfg(Path("m.pt"), (1, 2)), "upstream")
    b = input_key({"epochs": 3, "lr": 0.1}, _Cfg(Path("m.pt"), (1, 2)), "upstream")
    assert a == b
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != input_key({"lr": 0.2, "epochs": 3}, _Cfg(Path("m.pt"), (1, 2)), "upstream")
    assert a != input_key({"lr": 0.1, "epochs": 3}, _Cfg(Path("n.pt"), (1, 2)), "upstream")
    assert a != input_key({"lr": 0.1, "epochs": 3}, _Cfg(Path("m.pt"), (1, 2)), "other")
    assert input_key(1, 2) != input_key(2, 1)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"schema": "edgedistill.manifest/2", "stages": {', id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"schema": "other/9", "stages": {"a": 1}}', id="foreign-schema"),
        pytest.param(b"\xff\xfe\x00garbage", id="binary"),
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(b'{"schema": "edgedistill.manifest/2"}', id="no-stages"),
    ],
)
def test_damaged_manifest_is_tolerated(tmp_path, content):
    (tmp_path / "kept.txt").write_text("artifact")
    (tmp_path / MANIFEST).write_bytes(content)
    with RunDir(tmp_path) as rd:
        assert rd.finished("a", "k") is None
        rd.finish("a", "k", 1)
        assert rd.finished("a", "k") == 1
    assert (tmp_path / "kept.txt").read_text() == "artifact"
    with RunDir(tmp_path) as rd:
        assert rd.finished("a", "k") == 1


def test_a_record_of_another_shape_is_redone_not_half_read(tmp_path):
    @dataclass(frozen=True)
    class Now:
        value: int
        unit: str

    calls = []

    def make():
        calls.append(1)
        return Made(Now(3, "ms"))

    with RunDir(tmp_path) as rd:
        rd.finish("s", "k", {"old_value": 3})  # what an older version recorded under the same key
        assert rd.stage(StageId("s"), "k", Now, make, Progress(), "resumed") == Now(3, "ms")
        assert calls == [1]
        assert rd.stage(StageId("s"), "k", Now, make, Progress(), "resumed") == Now(3, "ms")
        assert calls == [1]


@dataclass(frozen=True)
class _Out:
    path: Path
    size: int


def _writer(rd: RunDir, calls: list, text: str = "weights"):
    def make() -> Made[_Out]:
        calls.append(1)
        out = rd.write_text("students/a/model.onnx", text)
        return Made(_Out(out, len(text)), (out,))

    return make


def test_a_changed_output_is_redone_and_the_redo_says_why(tmp_path):
    calls: list = []
    with RunDir(tmp_path) as rd:
        rd.stage(StageId("export", "a"), "k", _Out, _writer(rd, calls), Progress(), "resumed")
    target = tmp_path / "students/a/model.onnx"
    stat = target.stat()
    target.write_text("WEIGHTS")  # same size; the mtime set back as cp -p or tar x leave it
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    said = SaidProgress()
    with RunDir(tmp_path) as rd:
        rd.stage(StageId("export", "a"), "k", _Out, _writer(rd, calls), said, "resumed")
    assert calls == [1, 1]
    assert said.lines == ["export:a: students/a/model.onnx changed since it was written; redoing it"]
    assert target.read_text() == "weights"


def test_made_key_follows_the_content_of_a_stage_outputs(tmp_path):
    calls: list = []
    sid = StageId("export", "a")
    with RunDir(tmp_path) as rd:
        rd.stage(sid, "k", _Out, _writer(rd, calls), Progress(), "resumed")
        first = rd.made_key(sid)
        rd.finish(str(sid), "k", _Out(rd.path("x"), 1), [rd.write_text("students/a/model.onnx", "other")])
        assert rd.made_key(sid) != first


def test_a_moved_run_directory_resumes_with_its_own_files(tmp_path):
    calls: list = []
    with RunDir(tmp_path / "one") as rd:
        rd.stage(StageId("export", "a"), "k", _Out, _writer(rd, calls), Progress(), "resumed")
    manifest = (tmp_path / "one" / MANIFEST).read_text()
    assert str(tmp_path) not in manifest
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    shutil.rmtree(tmp_path / "one")
    with RunDir(tmp_path / "two") as rd:
        got = rd.stage(StageId("export", "a"), "k", _Out, _writer(rd, calls), Progress(), "resumed")
    assert calls == [1]
    assert got.path == tmp_path / "two" / "students/a/model.onnx" and got.path.read_text() == "weights"


def test_file_digest_is_of_content_not_size_or_time(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    a.write_bytes(b"0123")
    b.write_bytes(b"0123")
    os.utime(b, ns=(1, 1))
    assert file_digest(a) == file_digest(b) != ""
    stat = a.stat()
    a.write_bytes(b"3210")
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_digest(a) != file_digest(b)
    folder = tmp_path / "f"
    (folder / "x").mkdir(parents=True)
    (folder / "x" / "1.png").write_bytes(b"1")
    before = file_digest(folder)
    (folder / "x" / "1.png").write_bytes(b"2")
    assert file_digest(folder) not in (before, "")
    assert file_digest(tmp_path / "missing") == ""


def test_stale_scratch_left_by_a_kill_is_removed_on_open(tmp_path):
    (tmp_path / "students" / "a").mkdir(parents=True)
    stale = [tmp_path / ".report.json.abc123.tmp", tmp_path / "students" / "a" / ".model.onnx.x1.tmp"]
    for f in stale:
        f.write_text("half")
    probe = tmp_path / ".size-probe-q1.tmp" / "onnx"
    probe.mkdir(parents=True)
    (probe / "model.onnx").write_text("x")
    kept = tmp_path / "students" / "a" / "model.onnx"
    kept.write_text("kept")
    with RunDir(tmp_path):
        pass
    assert not any(f.exists() for f in stale) and not probe.parent.exists()
    assert kept.read_text() == "kept"


def test_a_directory_the_run_made_and_left_empty_is_removed(tmp_path):
    with RunDir(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    with RunDir(tmp_path / "old"):
        pass
    assert (tmp_path / "old").is_dir()


def test_written_files_get_the_modes_of_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with RunDir(tmp_path) as rd:
            paths = [rd.write_text("report.json", "{}"), rd.save_torch("student.pt", {"k": 1})]
    finally:
        os.umask(old)
    assert [oct(p.stat().st_mode & 0o777) for p in paths] == ["0o644", "0o644"]
