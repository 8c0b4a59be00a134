"""sdlocal.hosted, the work behind Cog's runner, in-process: setup from the environment, PNGs with parameters,
request-rule errors named by input, and the starter download when no model is mounted (against a local fake Hub).
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from sdlocal.engine import EngineError
from sdlocal.hosted import Hosted, HostedInputError, HostedRunError, HostedSetupError, TextToImage, setup
from sdlocal.settings import Settings
from sdlocal.starter import STARTER_MODELS, StarterModel
from tests.engine.conftest import model_name

MODEL_FILE = "tiny-sd1-safetensors.safetensors"


def cpu_env(data_dir: Path, models_dir: Path | None = None) -> dict[str, str]:
    """The environment a container gives setup: the app's own variables, CPU and fp32 so images are exact."""
    env = {"SDLOCAL_DATA_DIR": str(data_dir), "SDLOCAL_DEVICE": "cpu", "SDLOCAL_PRECISION": "fp32"}
    if models_dir is not None:
        env["SDLOCAL_MODELS_DIRS"] = str(models_dir)
    return env


@pytest.fixture(scope="module")
def hosted(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Hosted:
    return setup(cpu_env(tmp_path_factory.mktemp("data"), tiny_models_dir), log=lambda _line: None)


def inputs(**overrides: object) -> TextToImage:
    values: dict[str, object] = dict(prompt="a red cube on a table", negative_prompt="blurry", width=64, height=64,
                                     steps=2, sampler="Euler", seed=1234, num_outputs=2,
                                     model=model_name(MODEL_FILE))
    values.update(overrides)
    return TextToImage(**values)  # type: ignore[arg-type]


def test_setup_loads_a_model_from_the_mounted_folder(hosted: Hosted, tiny_models_dir: Path) -> None:
    assert hosted.engine.current_model is not None
    assert Path(hosted.engine.current_model.path).parent == tiny_models_dir
    assert tiny_models_dir in hosted.settings.models_dirs


def test_a_prediction_writes_pngs_with_their_parameters(hosted: Hosted) -> None:
    paths = hosted.generate(inputs())
    assert len(paths) == 2 and paths[0].parent == paths[1].parent
    for path, seed in zip(paths, (1234, 1235), strict=True):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (64, 64)
            parameters = image.info["parameters"]
        assert parameters.startswith("a red cube on a table\nNegative prompt: blurry\n")
        assert f"Seed: {seed}," in parameters and "Steps: 2," in parameters and "Sampler: Euler," in parameters
        assert f"Model: {model_name(MODEL_FILE)}" in parameters


def test_each_prediction_gets_a_fresh_folder_and_the_last_one_is_removed(hosted: Hosted) -> None:
    first = hosted.generate(inputs(num_outputs=1))
    second = hosted.generate(inputs(num_outputs=1, seed=7))
    assert first[0].parent != second[0].parent
    assert not first[0].parent.exists() and second[0].is_file()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"width": 100}, r"^width: 100 is not allowed; must be a multiple of 8 \(try 96 or 104\)"),
    ({"num_outputs": 17}, r"^num_outputs: 17 is not allowed; must be from 1 to 16"),
    ({"sampler": "Euler z"}, r"^sampler: 'Euler z' is not allowed; .*Euler a"),
    ({"schedule_type": "Sideways"}, r"^schedule_type: 'Sideways' is not allowed"),
    ({"prompt": "a cube <lora:x:abc>"}, r"^prompt: .*the weight 'abc' is not a number"),
])
def test_request_rules_name_the_input_and_the_fix(hosted: Hosted, overrides: dict, message: str) -> None:
    with pytest.raises(HostedInputError, match=message):
        hosted.generate(inputs(**overrides))


def test_an_unknown_model_lists_the_known_ones(hosted: Hosted) -> None:
    with pytest.raises(HostedInputError, match=r"model: 'no-such-model' is not a known model\. Known models: .*tiny"):
        hosted.generate(inputs(model="no-such-model"))


def test_an_empty_model_means_the_loaded_one(hosted: Hosted) -> None:
    loaded = hosted.engine.current_model
    assert loaded is not None
    paths = hosted.generate(inputs(model="", num_outputs=1))
    with Image.open(paths[0]) as image:
        assert f"Model: {Path(loaded.name).name}" in image.info["parameters"]


class OutOfMemoryEngine:
    """Accepts every request and fails every run, as a GPU without room for the batch does."""

    def validate(self, request: object) -> object:
        return request

    def generate(self, request: object) -> object:
        raise EngineError("Out of GPU memory at 64x64.", "Lower num_outputs or the size.")


def test_an_engine_failure_is_its_message_not_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where an output folder would be made
    hosted = Hosted(settings=Settings(data_dir=tmp_path / "data"), engine=OutOfMemoryEngine())  # type: ignore[arg-type]
    with pytest.raises(HostedRunError, match=r"^Out of GPU memory at 64x64\. Lower num_outputs or the size\.$"):
        hosted.generate(inputs())
    assert not list(tmp_path.iterdir())  # no output folder for a run that made nothing


def test_bad_settings_fail_setup_with_the_setting_named(tmp_path: Path) -> None:
    env = {**cpu_env(tmp_path), "SDLOCAL_PRECISION": "fp8"}
    with pytest.raises(HostedSetupError, match="precision: 'fp8' is not valid. Choose one of"):
        setup(env, log=lambda _line: None)


# ------------------------------------------------------------------------------------------- the starter download
class FakeHub(http.server.BaseHTTPRequestHandler):
    """Serves ``payload`` at /org/repo/resolve/main/tiny.safetensors with Range support, like tests/test_starter.py."""

    payload = b""
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        FakeHub.requests.append(self.path)
        if self.path != "/org/repo/resolve/main/tiny.safetensors":
            self.send_error(404, "Entry not found")
            return
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        body = FakeHub.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def tiny_file(tiny_models_dir: Path) -> Path:
    return tiny_models_dir / MODEL_FILE


@pytest.fixture()
def hub(tiny_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    FakeHub.payload = tiny_file.read_bytes()
    FakeHub.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def starter_for(tiny_file: Path) -> StarterModel:
    return replace(STARTER_MODELS["sd15"], repo="org/repo", filename="tiny.safetensors",
                   sha256=hashlib.sha256(tiny_file.read_bytes()).hexdigest())


def own_folder_with_sidecar(data_dir: Path, tiny_file: Path) -> Path:
    """``<data dir>/models/Stable-diffusion`` holding only the tiny file's config sidecar (not a model by itself):
    a tiny architecture needs it to load, a real starter model does not."""
    folder = data_dir / "models" / "Stable-diffusion"
    shutil.copytree(tiny_file.with_suffix(".config"), folder / "tiny.config")
    return folder


def test_without_a_model_setup_downloads_the_starter_and_loads_it(tmp_path: Path, hub: str, tiny_file: Path) -> None:
    folder = own_folder_with_sidecar(tmp_path, tiny_file)
    lines: list[str] = []
    hosted = setup(cpu_env(tmp_path), starter=starter_for(tiny_file), endpoint=hub, log=lines.append)
    assert (folder / "tiny.safetensors").read_bytes() == tiny_file.read_bytes()
    assert FakeHub.requests == ["/org/repo/resolve/main/tiny.safetensors"]
    assert hosted.engine.current_model is not None and hosted.engine.current_model.name == "tiny"
    assert any("downloading" in line and str(folder) in line for line in lines)
    assert any("(100%)" in line for line in lines)
    assert len(hosted.generate(inputs(model="tiny", num_outputs=1))) == 1


def test_a_bad_download_fails_setup_with_the_starters_message(tmp_path: Path, hub: str, tiny_file: Path) -> None:
    folder = own_folder_with_sidecar(tmp_path, tiny_file)
    wrong = replace(starter_for(tiny_file), sha256="0" * 64)
    with pytest.raises(HostedSetupError, match="could not be downloaded: tiny.safetensors: the downloaded file's "
                                               "sha256 is [0-9a-f]{64}, not the published 0{64}; it was deleted"):
        setup(cpu_env(tmp_path), starter=wrong, endpoint=hub, log=lambda _line: None)
    assert not list(folder.glob("*tiny.safetensors*"))


def test_offline_setup_fails_at_once_without_a_connection(tmp_path: Path, hub: str, tiny_file: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HostedSetupError, match="HF_HUB_OFFLINE is set.*Download it by hand from"):
        setup(cpu_env(tmp_path), starter=starter_for(tiny_file), endpoint=hub, log=lambda _line: None)
    assert FakeHub.requests == []
