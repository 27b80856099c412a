"""Knowledge distillation (``distill:``): the loss on hand-computed logits, the frozen teacher,
refusals as one line, and a tiny teacher -> student run end to end."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from segflow.cli.main import main
from segflow.config import build_config, load_config
from segflow.errors import ConfigError
from segflow.training.distill import Distillation, distill_kl, teacher_path
from segflow.training.engine import train
from segflow_test_configs import tiny_training_raw

IGNORE = 255
LN3 = math.log(3.0)
KL_75 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
"""KL([0.75, 0.25] || [0.5, 0.5]): teacher logits [ln 3, 0] against a uniform student, T = 1."""
KL_90 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
"""KL([0.9, 0.1] || [0.5, 0.5]): teacher logits [ln 9, 0]."""


def _logits(*pixels: list[float], height: int = 1, width: int = 1) -> torch.Tensor:
    """(1, K, H, W) logits from per-pixel K-vectors in row-major order."""
    return torch.tensor(pixels, dtype=torch.float32).T.reshape(1, -1, height, width)


def test_one_pixel_two_classes_by_hand() -> None:
    student = torch.zeros(1, 2, 1, 1)
    teacher = _logits([LN3, 0.0])
    value = distill_kl(student, teacher, torch.zeros(1, 1, 1, dtype=torch.long), 1.0, IGNORE)
    assert value.item() == pytest.approx(KL_75, abs=1e-6)  # 0.130812 nats
    assert value.item() == pytest.approx(0.1308120, abs=1e-6)


def test_two_by_two_with_an_ignored_pixel() -> None:
    student = torch.zeros(1, 2, 2, 2, requires_grad=True)
    teacher = _logits([LN3, 0.0], [0.0, 0.0], [0.0, LN3], [math.log(9.0), 0.0], height=2, width=2)
    target = torch.tensor([[[0, 1], [1, IGNORE]]])
    value = distill_kl(student, teacher, target, 1.0, IGNORE)
    assert value.item() == pytest.approx(2 * KL_75 / 3, abs=1e-6)  # the ignored pixel's KL_90 not counted
    with_all = distill_kl(student, teacher, torch.zeros(1, 2, 2, dtype=torch.long), 1.0, IGNORE)
    assert with_all.item() == pytest.approx((2 * KL_75 + KL_90) / 4, abs=1e-6)
    value.backward()
    assert student.grad is not None and float(student.grad[0, :, 1, 1].abs().sum()) == 0.0  # ignored
    assert float(student.grad[0, :, 0, 0].abs().sum()) > 0


def test_no_labelled_pixel_gives_zero_with_a_gradient() -> None:
    student = torch.randn(1, 3, 2, 2, requires_grad=True)
    value = distill_kl(student, torch.randn(1, 3, 2, 2), torch.full((1, 2, 2), IGNORE), 2.0, IGNORE)
    assert value.item() == 0.0 and value.requires_grad


def test_temperature_softens_and_scales_by_t_squared() -> None:
    student = torch.zeros(1, 2, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    value = distill_kl(student, _logits([LN3, 0.0]), target, 2.0, IGNORE)
    p = math.sqrt(3.0) / (math.sqrt(3.0) + 1.0)  # softmax([ln 3 / 2, 0])
    assert value.item() == pytest.approx(
        4.0 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))), abs=1e-6
    )
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    labels = torch.randint(0, 4, (2, 3, 3))
    for temperature in (0.5, 2.0, 4.0):  # softmax(T s / T) = softmax(s): only the T^2 factor remains
        scaled = distill_kl(s * temperature, t * temperature, labels, temperature, IGNORE)
        assert scaled.item() == pytest.approx(
            temperature**2 * distill_kl(s, t, labels, 1.0, IGNORE).item(), rel=1e-5
        )


def test_teacher_of_another_size_is_resized_bilinearly() -> None:
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    constant = distill_kl(torch.zeros(1, 2, 2, 2), _logits([LN3, 0.0]), target, 1.0, IGNORE)
    assert constant.item() == pytest.approx(KL_75, abs=1e-6)  # a 1x1 teacher is constant at 2x2
    torch.manual_seed(1)
    student, small = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 8, 8))
    resized = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    assert distill_kl(student, small, labels, 2.0, IGNORE).item() == pytest.approx(
        distill_kl(student, resized, labels, 2.0, IGNORE).item(), abs=1e-7
    )


def test_mismatched_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="same B and K"):
        distill_kl(
            torch.zeros(1, 2, 1, 1), torch.zeros(1, 3, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long), 1, 0
        )


class _FixedTeacher(nn.Module):
    """Answers fixed (1, K, h, w) logits cropped to the input's size; records what it saw."""

    def __init__(self, logits: torch.Tensor, output_stride: int = 1) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.output_stride = output_stride
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return self.logits[..., : x.shape[-2], : x.shape[-1]].expand(len(x), -1, -1, -1)


def test_weight_mixes_task_and_distill_terms() -> None:
    teacher = _FixedTeacher(_logits([LN3, 0.0]))
    images, target = torch.rand(1, 3, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long)
    student = torch.zeros(1, 2, 1, 1, requires_grad=True)
    task = torch.tensor(1.25)
    loss, term = Distillation(teacher, 0.0, 1.0, IGNORE)(task, student, images, target)
    assert loss.item() == task.item() == 1.25 and term.item() == pytest.approx(KL_75, abs=1e-6)
    loss, _ = Distillation(teacher, 1.0, 1.0, IGNORE)(task, student, images, target)
    assert loss.item() == pytest.approx(KL_75, abs=1e-6)
    loss, _ = Distillation(teacher, 0.25, 1.0, IGNORE)(task, student, images, target)
    assert loss.item() == pytest.approx(0.75 * 1.25 + 0.25 * KL_75, abs=1e-6)
    loss.backward()
    assert teacher.logits.grad is None and not teacher.training  # frozen, eval mode


def test_teacher_input_is_padded_to_its_stride_and_cropped_back() -> None:
    teacher = _FixedTeacher(torch.randn(1, 2, 4, 4), output_stride=4)
    logits = Distillation(teacher, 0.5, 2.0, IGNORE).teacher_logits(torch.rand(2, 3, 2, 3))
    assert teacher.seen == [(2, 3, 4, 4)] and logits.shape == (2, 2, 2, 3)
    assert torch.equal(logits[0], teacher.logits.detach()[0, :, :2, :3])


def test_teacher_stays_out_of_the_student_state() -> None:
    from segflow.training.module import SegmentationModule

    distill = Distillation(_FixedTeacher(torch.zeros(1, 5, 1, 1)), 0.5, 2.0, IGNORE)
    net = nn.Conv2d(3, 5, 1)
    module = SegmentationModule(
        net, nn.CrossEntropyLoss(), list("abcde"), IGNORE, {}, {}, None, distill=distill
    )  # type: ignore[arg-type]
    assert set(module.state_dict()) == {"net.weight", "net.bias"}
    assert all(p is net.weight or p is net.bias for p in module.parameters())
    assert copy.deepcopy(module).distill is distill  # EMA's copy shares the frozen teacher


# --- config, refusals, end to end -------------------------------------------------------------


def _write_config(folder: Path, raw: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "student.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_teacher_path_resolves_against_the_config_folder(
    tiny_data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = {**tiny_training_raw(tmp_path / "runs", tiny_data), "distill": {"teacher": "t/best.ckpt"}}
    path = _write_config(tmp_path / "cfg", raw)
    (tmp_path / "cfg" / "t").mkdir()
    (tmp_path / "cfg" / "t" / "best.ckpt").write_bytes(b"")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    assert config.distill is not None and config.distill.model_dump() == {
        "teacher": "t/best.ckpt",
        "weight": 0.5,
        "temperature": 2.0,
    }
    assert teacher_path(config) == tmp_path / "cfg" / "t" / "best.ckpt"
    override = load_config(path, ["distill.teacher=mine.ckpt", "distill.weight=0.25"])
    assert override.distill is not None and override.distill.teacher == str(elsewhere / "mine.ckpt")
    assert override.distill.weight == 0.25 and override.distill.temperature == 2.0


@pytest.mark.parametrize(
    ("distill", "message"),
    [
        ({"teacher": "t.ckpt", "weight": 1.5}, "'distill.weight': Input should be less than or equal to 1"),
        ({"teacher": "t.ckpt", "temperature": 0}, "'distill.temperature': Input should be greater than 0"),
        ({"weight": 0.5}, "missing required key 'distill.teacher'"),
        ({"teacher": "t.ckpt", "alpha": 0.5}, "unknown key 'distill.alpha'"),
    ],
)
def test_bad_distill_values_are_one_config_error(
    tiny_config: dict[str, Any], distill: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({**tiny_config, "distill": distill})


def _refusal(path: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> str:
    assert main(["train", str(path), *overrides]) == 1  # a user error: exit 1, one `error:` line
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_non_semantic_task_is_refused(
    tiny_data: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = {
        **tiny_training_raw(tmp_path / "runs", tiny_data),
        "task": "multilabel",
        "distill": {"teacher": "t.ckpt"},
    }
    err = _refusal(_write_config(tmp_path / "cfg", raw), capsys)
    assert "'distill': knowledge distillation trains semantic models only, got task: multilabel" in err


def test_missing_teacher_is_refused(
    tiny_data: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = {**tiny_training_raw(tmp_path / "runs", tiny_data), "distill": {"teacher": "nope/best.ckpt"}}
    err = _refusal(_write_config(tmp_path / "cfg", raw), capsys)
    assert f"distill.teacher {tmp_path / 'cfg' / 'nope' / 'best.ckpt'} does not exist" in err
    assert not (tmp_path / "runs" / "tiny").exists()  # refused before the run folder is made


def test_teacher_with_other_classes_is_refused(
    tiny_data: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from segflow.models import create_model
    from segflow.models.checkpoint import build_meta, save_model_checkpoint

    net = create_model("unet", "resnet18", in_channels=3, num_classes=3, decoder_channels=[8, 8, 8, 8, 8])
    meta = build_meta(net, ["a", "b", "c"], None, IGNORE, {"max_value": 255.0}, None, None, {})
    save_model_checkpoint(tmp_path / "cfg" / "other.ckpt", net, meta)
    raw = {**tiny_training_raw(tmp_path / "runs", tiny_data), "distill": {"teacher": "other.ckpt"}}
    err = _refusal(_write_config(tmp_path / "cfg", raw), capsys)
    assert "predicts classes ['a', 'b', 'c'] but this run's data has ['background', 'circle'" in err
    assert not (tmp_path / "runs" / "tiny").exists()


def _train_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("train/loss")]


def test_tiny_teacher_then_distilled_student(
    tiny_data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher_run = train(build_config(tiny_training_raw(tmp_path / "runs", tiny_data, name="teacher")))
    assert teacher_run is not None
    best = teacher_run.best_checkpoint
    assert best == tmp_path / "runs" / "teacher" / "checkpoints" / "best.ckpt" and best.is_file()
    before = best.read_bytes()

    raw = tiny_training_raw(tmp_path / "runs", tiny_data, name="student")
    raw["distill"] = {"teacher": "../runs/teacher/checkpoints/best.ckpt", "weight": 0.5, "temperature": 2.0}
    path = _write_config(tmp_path / "cfg", raw)
    monkeypatch.chdir(tmp_path / "runs")  # the teacher resolves against the config's folder
    assert main(["train", str(path)]) == 0

    run = tmp_path / "runs" / "student"
    rows = _train_rows(run)
    assert len(rows) == 1
    row = {key: float(value) for key, value in rows[0].items() if value}
    assert {"train/loss_ce", "train/loss_dice", "train/loss_task", "train/loss_distill"} <= set(row)
    assert row["train/loss_distill"] > 0
    assert row["train/loss_task"] == pytest.approx(row["train/loss_ce"] + row["train/loss_dice"], rel=1e-5)
    assert row["train/loss"] == pytest.approx(
        0.5 * row["train/loss_task"] + 0.5 * row["train/loss_distill"], rel=1e-5
    )
    assert "train/loss_distill" not in _train_rows(tmp_path / "runs" / "teacher")[0]  # only when distilling

    student = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    teacher = torch.load(best, map_location="cpu", weights_only=True)
    assert set(student["state_dict"]) == set(teacher["state_dict"])  # no teacher weights inside
    assert student["segflow"]["config"]["distill"] == raw["distill"]  # the settings travel with it
    assert best.read_bytes() == before  # the teacher is never written
