"""atomic_write keeps the umask's mode; claim_output_dir is the one output-folder rule."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from segflow.errors import ConfigError
from segflow.io_utils import atomic_write, claim_output_dir, current_umask


@pytest.fixture
def umask() -> Iterator[object]:
    """Sets a umask for one test and restores the old one."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_write_honours_the_umask(tmp_path: Path, umask, mask: int, expected: int) -> None:
    umask(mask)
    assert current_umask() == mask
    target = tmp_path / "out.txt"
    with atomic_write(target) as tmp:
        tmp.write_text("x")
    assert mode_of(target) == expected
    assert target.read_text() == "x"


def test_atomic_write_keeps_the_mode_of_an_existing_file(tmp_path: Path, umask) -> None:
    umask(0o022)
    target = tmp_path / "shared.json"
    target.write_text("old")
    target.chmod(0o664)
    with atomic_write(target) as tmp:
        tmp.write_text("new")
    assert mode_of(target) == 0o664
    assert target.read_text() == "new"


def test_atomic_write_mode_survives_writers_that_replace_the_file(tmp_path: Path, umask) -> None:
    """np.save / torch.save / onnx.save open the temp path themselves; the mode still holds."""
    umask(0o022)
    target = tmp_path / "probs.npy"
    with atomic_write(target) as tmp:
        tmp.unlink()  # a writer that recreates the file gets the umask mode anyway
        np.save(tmp, np.zeros(2))
    assert mode_of(target) == 0o644


def test_atomic_write_failure_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_outputs_written_by_segflow_writers_are_readable_by_others(tmp_path: Path, umask) -> None:
    """Masks (palette PNG), checkpoints (torch.save) and JSON all go through atomic_write."""
    import torch

    from segflow.metrics.report import save_metrics_json
    from segflow.viz.png import save_label_png

    umask(0o022)
    save_label_png(tmp_path / "mask.png", np.zeros((4, 4), np.uint8), [(0, 0, 0), (255, 0, 0)])
    save_metrics_json(tmp_path / "metrics.json", {"miou": 1.0})
    with atomic_write(tmp_path / "model.ckpt") as tmp:
        torch.save({"a": 1}, tmp)
    for name in ("mask.png", "metrics.json", "model.ckpt"):
        assert mode_of(tmp_path / name) == 0o644, name


# ---- claim_output_dir ---------------------------------------------------------------------

OWNED = ("checkpoints", "metrics.json", "*_overlay.png")


def test_claim_creates_a_missing_folder(tmp_path: Path) -> None:
    folder = claim_output_dir(tmp_path / "runs" / "a", overwrite=False, owned=OWNED)
    assert folder.is_dir()
    assert list(folder.iterdir()) == []


def test_claim_accepts_an_empty_folder(tmp_path: Path) -> None:
    assert claim_output_dir(tmp_path, overwrite=False, owned=OWNED) == tmp_path


def test_claim_refuses_a_non_empty_folder_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError) as info:
        claim_output_dir(tmp_path, overwrite=False, owned=OWNED, what="run folder")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"run folder {tmp_path} is not empty (holds metrics.json)")
    assert "--overwrite" in message
    assert (tmp_path / "metrics.json").exists()


def test_claim_refusal_lists_three_entries_and_the_count(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d"):
        (tmp_path / name).write_text("")
    with pytest.raises(ConfigError, match=r"holds a, b, c, \.\.\. \(4 entries\)"):
        claim_output_dir(tmp_path, overwrite=False, owned=OWNED)


def test_claim_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("")
    with pytest.raises(ConfigError, match="exists and is a file, not a folder"):
        claim_output_dir(target, overwrite=True, owned=OWNED)


def test_overwrite_clears_only_owned_outputs(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_text("")
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "img_overlay.png").write_text("")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    claim_output_dir(tmp_path, overwrite=True, owned=OWNED)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_overwrite_removes_an_owned_link_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(target)
    claim_output_dir(run, overwrite=True, owned=OWNED)
    assert list(run.iterdir()) == []
    assert (target / "keep.txt").exists()


def test_overwrite_with_a_predicate(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_text("")
    (tmp_path / "b.png").write_text("")
    claim_output_dir(tmp_path, overwrite=True, owned=lambda entry: entry.name == "a.png")
    assert [p.name for p in tmp_path.iterdir()] == ["b.png"]


def test_resume_accepts_a_non_empty_folder_untouched(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{}")
    claim_output_dir(tmp_path, overwrite=False, owned=OWNED, resume=True)
    assert (tmp_path / "metrics.json").read_text() == "{}"


def test_custom_hint(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    with pytest.raises(ConfigError, match="pass --overwrite or --resume$"):
        claim_output_dir(tmp_path, overwrite=False, owned=OWNED, hint="pass --overwrite or --resume")
