"""ONNX inference (``Predictor.from_path``, streaming, ``segflow predict``) never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from tests.inference.conftest import SmallNet, make_meta, random_image

from segflow.export.pipeline import export_model

HEAVY_MODULES = ("torch", "segmentation_models_pytorch", "timm")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import numpy as np
    import tifffile
    from typer.main import get_command

    import segflow.cli.predict  # registers the predict command on the app
    from segflow.cli.app import app
    from segflow.data.io import read_image
    from segflow.inference import InferenceOptions, Predictor
    from segflow.inference.bands import open_band_reader
    from segflow.inference.streaming import stream_file

    model, image, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    predictor = Predictor.from_path(model, InferenceOptions(tile=32, overlap=0.25))
    labels = predictor.predict(read_image(image)).labels
    reader = open_band_reader(image)
    stream_file(predictor, reader, image, work / "stream", large=True)
    reader.close()
    get_command(app)(
        ["predict", str(model), str(image), "--out", str(work / "cli"), "--tile", "32"],
        standalone_mode=False,
    )
    streamed = tifffile.imread(work / "stream" / (image.stem + ".tif"))
    print(json.dumps({
        "loaded": [name for name in sys.argv[4:] if name in sys.modules],
        "agree": float((streamed == labels).mean()),
        "classes": sorted(int(v) for v in np.unique(labels)),
    }))
    """
)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "small.onnx"
    export_model((SmallNet(), make_meta(multiple=8)), out, log=lambda line: None)
    return out


def test_onnx_predict_paths_import_no_torch(tmp_path: Path, onnx_model: Path) -> None:
    image = tmp_path / "scene.tif"
    tifffile.imwrite(image, random_image(100, 150), tile=(32, 32), photometric="rgb")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(onnx_model), str(image), str(tmp_path), *HEAVY_MODULES],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert report["agree"] == 1.0
    assert len(report["classes"]) >= 2  # a real prediction, not a constant map
    with Image.open(tmp_path / "cli" / "scene.png") as png:
        assert png.mode == "P"
        assert np.asarray(png).shape == (100, 150)
