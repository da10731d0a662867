"""The one set of tiny test models and data shared by every test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest
import torch
from torch import nn

from edgedistill.progress import Progress

INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


class TinyCNN(nn.Module):
    """Conv-BN-ReLU x2, pooling and a linear head, on 1x8x8 inputs."""

    def __init__(self, width: int = 8, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TinyMLP(nn.Module):
    """A Linear-heavy model (the kind dynamic int8 suits), on 1x8x8 inputs."""

    def __init__(self, hidden: int = 32, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Branchy(nn.Module):
    """A forward whose branch depends on the input's values, which torch.export refuses: a
    student the formats converted from PyTorch (ExecuTorch, LiteRT) cannot make."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x.flatten(1))
        return -self.fc(x.flatten(1))


def student_sources(model: nn.Module | None, x: np.ndarray, folder, val_x=None, onnx=None):
    """Deploy sources for a format made from `model` in PyTorch, on the digits `x`: `onnx` (or
    none) stands in as the ONNX it is priced by, at fp32 and int8."""
    from edgedistill.compress.quantize import QuantizeConfig
    from edgedistill.export.deploy import Sources

    return Sources(
        onnx, onnx, folder, x[:16] if val_x is None else val_x, x[:32], lambda _o: 1.0,
        QuantizeConfig().symmetric(), model=model,
    )


def student_folder(folder, model: nn.Module, onnx) -> None:
    """A run's student folder at `folder`, as `edgedistill export` reads one: the ONNX file `onnx`
    and the student in PyTorch."""
    folder.mkdir()
    (folder / "model.onnx").write_bytes(onnx.read_bytes())
    torch.save(model, folder / "student.pt")


def tiny_cnn(width: float = 1.0) -> nn.Module:
    """A TinyCNN whose channel count scales with `width` (a `scale` family)."""
    torch.manual_seed(0)
    return TinyCNN(width=max(1, round(8 * width))).eval()


def tiny_mlp() -> nn.Module:
    """A seeded TinyMLP."""
    torch.manual_seed(0)
    return TinyMLP().eval()


class OutlierNorm(nn.Module):
    """A linear layer, one channel of its output 200x the others, LayerNorm, a linear head: the
    residual stream of a trained transformer, whose outlier channels LayerNorm's gain undoes.
    One uint8 scale over the normalized tensor's input leaves its ordinary channels no steps."""

    def __init__(self, features: int = 64, width: int = 32) -> None:
        super().__init__()
        self.inp = nn.Linear(features, width)
        self.register_buffer("gain", torch.tensor([200.0] + [1.0] * (width - 1)))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, NUM_CLASSES)
        with torch.no_grad():
            self.norm.weight.copy_(50 / self.gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.inp(x) * self.gain))


def outlier_norm() -> nn.Module:
    """A seeded OutlierNorm on the 64 features of digits."""
    torch.manual_seed(0)
    return OutlierNorm().eval()


class TinyTokens(nn.Module):
    """Token ids and a mask in, as a transformer takes them: an embedding, masked, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head((self.embed(ids) * mask.unsqueeze(-1).float()).sum(1))


def tiny_tokens_onnx(path):
    """A seeded TinyTokens exported to `path`: inputs `ids` and `mask`, both axes of each dynamic
    as in a transformer's export, output `y` of 4 values."""
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (2, 6))
    torch.onnx.export(
        TinyTokens().eval(), (ids, torch.ones_like(ids)), str(path), input_names=["ids", "mask"], output_names=["y"],
        dynamic_axes={"ids": {0: "b", 1: "t"}, "mask": {0: "b", 1: "t"}}, dynamo=False,
    )
    return path


# The files that take minutes, in the order they start: the suite's processes take whole files
# (--dist loadfile) in collection order, and one of these started last would run on alone.
LONG_FILES = (
    "test_example.py",
    "pipeline/test_run.py",
    "test_interrupt.py",
    "test_distributed.py",
    "targets/test_bench.py",
    "pipeline/test_devices.py",
    "export/test_coreml.py",
    "hf/test_hf_run.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the long files first (see LONG_FILES); every other test keeps its place."""

    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONG_FILES) if path.endswith("tests/" + name)), len(LONG_FILES))

    items.sort(key=rank)


@pytest.fixture
def cnn() -> nn.Module:
    return tiny_cnn()


@pytest.fixture
def mlp() -> nn.Module:
    return tiny_mlp()


@pytest.fixture(scope="session")
def digits_xy() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 (N, 1, 8, 8) in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    return x, d.target.astype(np.int64)


@pytest.fixture(scope="session")
def trained_mlp(digits_xy) -> nn.Module:
    """A TinyMLP trained a few epochs on digits (accurate enough to test quantization)."""
    x, y = digits_xy
    model = tiny_mlp().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


def tiny_run_config() -> dict:
    """A fast run config: TinyCNN teacher trained briefly on digits, two pruned tiers."""
    return {
        "name": "tiny",
        "teacher": {"factory": "conftest:tiny_cnn", "train": True},
        "tiers": [
            {"name": "half", "budget": {"params": "50%"}},
            {"name": "quarter", "budget": {"params": "25%"}},
        ],
        "teacher_training": {"epochs": 3, "alpha": 0.0},
        "distill": {"epochs": 2},
        "measure": {"warmup": 1, "runs": 5, "throughput_batch": 4},
    }


@pytest.fixture
def tiny_config() -> dict:
    return tiny_run_config()


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory, trained_mlp, digits_xy):
    """The trained TinyMLP exported to ONNX (fp32)."""
    from edgedistill.export.onnx import export_onnx

    x, _ = digits_xy
    return export_onnx(trained_mlp, x[:2], x[:64], tmp_path_factory.mktemp("mlp") / "mlp.onnx").path


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory, digits_xy):
    """The (untrained, seeded) TinyCNN exported to ONNX (fp32)."""
    from edgedistill.export.onnx import export_onnx

    x, _ = digits_xy
    return export_onnx(tiny_cnn(), x[:2], x[:64], tmp_path_factory.mktemp("cnn") / "cnn.onnx").path


TINY_WORDS = (
    "the a an of to and in is it for on with as by this that be are from or at which can not "
    "model student teacher data file value list function return object python module class "
    "string number time device phone small large fast slow run test code name type error"
).split()


def tiny_bert_folder(folder, task: str = "embedding", layers: int = 4, seed: int = 0):
    """A randomly initialised tiny BERT saved as a Hugging Face folder with its tokenizer.

    `task` "embedding" writes a sentence-transformers folder (mean pooling, then Normalize);
    "classification" a BertForSequenceClassification with 3 labels.
    """
    import json
    from pathlib import Path

    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    vocab = list(dict.fromkeys(specials + TINY_WORDS + letters + [f"##{c}" for c in letters]))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )
    if task == "classification":
        config.num_labels = 3
        BertForSequenceClassification(config).eval().save_pretrained(folder)
        return folder
    BertModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
    }))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    return folder


@pytest.fixture(scope="session")
def bert_folder(tmp_path_factory):
    """A tiny sentence-transformers BERT folder (4 layers, hidden 32), shared read-only."""
    return tiny_bert_folder(tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="session")
def bert_classifier_folder(tmp_path_factory):
    """A tiny BertForSequenceClassification folder (3 labels), shared read-only."""
    return tiny_bert_folder(tmp_path_factory.mktemp("bert-cls") / "tiny-bert-cls", task="classification")


SSHD = "/usr/sbin/sshd"
# ssh options for the throwaway server: its host key is new every session.
NO_HOST_CHECK = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR")


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A throwaway sshd on a free port of 127.0.0.1 that accepts one throwaway key."""
    if not os.path.exists(SSHD) or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH is not installed (apt-get install openssh-server openssh-client)")
    tmp = tmp_path_factory.mktemp("sshd")
    _keygen(tmp / "host_key")
    _keygen(tmp / "user_key")
    _keygen(tmp / "other_key")
    (tmp / "authorized_keys").write_text((tmp / "user_key.pub").read_text())
    port = free_port()
    (tmp / "sshd_config").write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {tmp / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\n"
        f"PidFile {tmp / 'sshd.pid'}\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "PermitRootLogin yes\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "LogLevel ERROR\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.skip(f"sshd did not start: {proc.stderr.read().decode(errors='replace').strip()[-300:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("sshd did not listen within 15 s")
                time.sleep(0.05)
        yield {"port": port, "key": tmp / "user_key", "other_key": tmp / "other_key"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stderr.close()


class SaidProgress(Progress):
    """A progress that keeps the stage lines it is told, for tests of what a run says."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def stage(self, text: str) -> None:
        self.lines.append(text)


# Teachers and data of the tasks beyond classification: tiny, seeded, generated here.
SIGNAL_SHAPE = (2, 32)


class TinySignalRegressor(nn.Module):
    """Conv1d-BN-ReLU x2, pooling and a linear head: (2, 32) sensor windows to one value."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(2, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
            nn.Conv1d(width, 2 * width, 5, padding=2), nn.BatchNorm1d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool1d(4),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * width, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TinySegmenter(nn.Module):
    """Conv-BN-ReLU x2 at full resolution and a 1x1 classifier: per-pixel logits of 1x8x8 inputs."""

    def __init__(self, width: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_signal_regressor() -> nn.Module:
    """A seeded TinySignalRegressor."""
    torch.manual_seed(0)
    return TinySignalRegressor().eval()


def tiny_segmenter() -> nn.Module:
    """A seeded TinySegmenter of three classes."""
    torch.manual_seed(0)
    return TinySegmenter().eval()


def tiny_tagger() -> nn.Module:
    """A seeded TinyCNN with four outputs, one per tag."""
    torch.manual_seed(0)
    return TinyCNN(num_classes=4).eval()


def signal_regression_data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2, 32) noisy two-axis vibration windows and the frequency of each (cycles per window / 8)."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(1.0, 6.0, n)
    t = np.arange(SIGNAL_SHAPE[1]) / SIGNAL_SHAPE[1]
    phase = rng.uniform(0, 2 * np.pi, (n, 2, 1))
    x = np.sin(2 * np.pi * freq[:, None, None] * t + phase) + 0.2 * rng.standard_normal((n, *SIGNAL_SHAPE))
    return x.astype(np.float32), (freq[:, None] / 8).astype(np.float32)


def segmentation_data(digits: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Digits with a label map per pixel: 0 background, 1 the ink of a digit below 5, 2 of the others."""
    x, y = digits
    ink = x[:, 0] > 0.4
    return x, np.where(ink, 1 + (y[:, None, None] >= 5), 0).astype(np.int64)


def tag_data(digits: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Digits with four 0/1 tags each: even, above 4, prime, drawn with a closed loop."""
    x, y = digits
    tags = np.stack([y % 2 == 0, y > 4, np.isin(y, (2, 3, 5, 7)), np.isin(y, (0, 6, 8, 9))], axis=1)
    return x, tags.astype(np.int64)


def negative_max_error(outputs: np.ndarray, targets: np.ndarray) -> float:
    """A user's own score, as a config names it (`score = "conftest:negative_max_error"`): minus the
    largest absolute error, so higher is better."""
    return -float(np.abs(outputs - targets.reshape(outputs.shape)).max())


def not_a_number(outputs: np.ndarray, targets: np.ndarray) -> str:
    """A user's score that forgets to return a number."""
    return "high"


class TinyTwoHead(nn.Module):
    """A detector-like teacher of 1x8x8 inputs with two raw heads from one trunk: "boxes" (the ink's
    centre and spread, 4 values) and "scores" (10 class logits), returned as a dict."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(width * 16, 32), nn.ReLU(),
        )
        self.boxes = nn.Linear(32, 4)
        self.scores = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {"boxes": self.boxes(features), "scores": self.scores(features)}


def tiny_two_head() -> nn.Module:
    """A seeded TinyTwoHead."""
    torch.manual_seed(0)
    return TinyTwoHead().eval()


def ink_boxes(x: np.ndarray) -> np.ndarray:
    """(N, 4): each image's ink centre (row, column) and spread (row, column), in pixels / 8."""
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    mass = x[:, 0].reshape(len(x), -1) + 1e-6
    mass = mass / mass.sum(axis=1, keepdims=True)
    r, c = rows.reshape(-1), cols.reshape(-1)
    mr, mc = mass @ r, mass @ c
    sr, sc = np.sqrt(mass @ r**2 - mr**2), np.sqrt(mass @ c**2 - mc**2)
    return (np.stack([mr, mc, sr, sc], axis=1) / 8).astype(np.float32)


@pytest.fixture(scope="session")
def two_head_weights(tmp_path_factory, digits_xy):
    """TinyTwoHead trained briefly on digits (boxes on `ink_boxes`, scores on the labels): a state dict."""
    x, y = digits_xy
    model = tiny_two_head().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt, bt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(ink_boxes(x))
    for _ in range(40):
        out = model(xt)
        loss = nn.functional.cross_entropy(out["scores"], yt) + 10 * nn.functional.mse_loss(out["boxes"], bt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("two-head") / "two_head.pt"
    torch.save(model.state_dict(), path)
    return path
