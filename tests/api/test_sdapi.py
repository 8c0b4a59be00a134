"""The /sdapi/v1 routes as AUTOMATIC1111 clients read them, over real HTTP against a tiny model."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.api.conftest import MODEL_A, MODEL_B, Server, decode_png


def small(**values: Any) -> dict[str, Any]:
    body = {"prompt": "a red cube", "negative_prompt": "blurry", "steps": 2, "width": 64, "height": 64,
            "seed": 1234, "sampler_name": "Euler", "cfg_scale": 7}
    body.update(values)
    return body


def wait_for(predicate, timeout: float = 60.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("the condition did not become true in time")


class Background:
    """A request run in a thread, so a test can poll /progress meanwhile."""

    def __init__(self, api: Server, path: str, body: dict[str, Any], timeout: float = 300) -> None:
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                with api.client(timeout=timeout) as http:
                    self.response = http.post(path, json=body)
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 300) -> httpx.Response:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.response is not None
        return self.response


# ---------------------------------------------------------------------------------------------- txt2img
def test_txt2img_returns_raw_base64_pngs_with_parameters_and_a_json_info(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json=small(batch_size=2, some_unknown_field=1))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    info = json.loads(body["info"])
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235]
    assert info["prompt"] == "a red cube" and info["all_prompts"] == ["a red cube"] * 2
    assert info["negative_prompt"] == "blurry" and info["sampler_name"] == "Euler"
    assert info["steps"] == 2 and info["cfg_scale"] == 7 and (info["width"], info["height"]) == (64, 64)
    assert info["sd_model_name"] == MODEL_A and len(info["job_timestamp"]) == 14
    assert len(body["images"]) == 2
    for image, infotext, seed in zip(body["images"], info["infotexts"], [1234, 1235], strict=True):
        png = decode_png(image)
        assert png.size == (64, 64)
        assert png.info["parameters"] == infotext
        assert infotext.startswith("a red cube\nNegative prompt: blurry\n") and f"Seed: {seed}," in infotext


def test_txt2img_echoes_the_request_with_a1111_defaults(client: httpx.Client) -> None:
    body = client.post("/sdapi/v1/txt2img", json={"prompt": "p", "steps": 2, "width": 64, "height": 64}).json()
    echoed = body["parameters"]
    assert echoed["prompt"] == "p" and echoed["steps"] == 2
    assert echoed["cfg_scale"] == 7.0 and echoed["seed"] == -1 and echoed["n_iter"] == 1
    assert echoed["sampler_index"] == "Euler" and echoed["save_images"] is False and echoed["send_images"] is True
    info = json.loads(body["info"])
    assert info["sampler_name"] == "Euler" and 0 <= info["seed"] < 2**32  # -1 became a concrete seed


def test_send_images_false_returns_no_images(client: httpx.Client) -> None:
    body = client.post("/sdapi/v1/txt2img", json=small(send_images=False)).json()
    assert body["images"] == [] and json.loads(body["info"])["all_seeds"] == [1234]


def test_images_are_saved_only_when_asked(client: httpx.Client, api: Server) -> None:
    outputs = api.data_dir / "outputs"
    before = set(outputs.rglob("*.png")) if outputs.exists() else set()
    client.post("/sdapi/v1/txt2img", json=small(seed=777))
    assert (set(outputs.rglob("*.png")) if outputs.exists() else set()) == before
    info = json.loads(client.post("/sdapi/v1/txt2img", json=small(seed=778, save_images=True)).json()["info"])
    new = set(outputs.rglob("*.png")) - before
    assert len(new) == 1 and [str(p) for p in new] == info["saved_paths"]
    saved = new.pop()
    assert saved.name.endswith("-778.png") and saved.parent.parent.name == "txt2img"
    assert Image.open(saved).info["parameters"] == info["infotexts"][0]


def test_sampler_aliases_and_scheduler_names_are_accepted(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json=small(sampler_name="k_dpmpp_2m", scheduler="karras"))
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["sampler_name"] == "DPM++ 2M" and "Schedule type: Karras" in info["infotexts"][0]


# ---------------------------------------------------------------------------------------------- models
def test_sd_models_lists_a1111_records(client: httpx.Client, api: Server) -> None:
    models = client.get("/sdapi/v1/sd-models").json()
    assert sorted(m["model_name"] for m in models) == [MODEL_A, MODEL_B]
    for model in models:
        assert set(model) == {"title", "model_name", "hash", "sha256", "filename", "config"}
        assert model["title"].startswith(model["model_name"])
        assert model["filename"].startswith(str(api.models_dir))


def test_options_switch_the_model_by_title_and_by_bare_name(client: httpx.Client, api: Server) -> None:
    options = client.get("/sdapi/v1/options").json()
    for key in ("sd_model_checkpoint", "sd_checkpoint_hash", "CLIP_stop_at_last_layers", "token_merging_ratio",
                "outdir_txt2img_samples"):
        assert key in options
    titles = {m["model_name"]: m["title"] for m in client.get("/sdapi/v1/sd-models").json()}
    try:
        response = client.post("/sdapi/v1/options", json={**options, "sd_model_checkpoint": titles[MODEL_B]})
        assert response.status_code == 200, response.text
        assert response.json()["ignored"] == {}  # what GET gives, POST takes back
        assert response.json()["applied"]["sd_model_checkpoint"].startswith(MODEL_B)
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith(MODEL_B)
        assert api.services.settings.load_ui_state()["model"] == MODEL_B  # loaded at the next start
        info = json.loads(client.post("/sdapi/v1/txt2img", json=small()).json()["info"])
        assert info["sd_model_name"] == MODEL_B
    finally:
        response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": MODEL_A})
        assert response.status_code == 200, response.text
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith(MODEL_A)


def test_options_honour_what_sdlocal_uses_and_name_the_rest(client: httpx.Client, api: Server,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from sdlocal.api.options import ApiOptions

    sent = {"CLIP_stop_at_last_layers": 2, "samples_save": False, "some_extension_option": "x",
            "samples_format": "jpg"}
    with caplog.at_level(logging.INFO, logger="sdlocal.api.options"):
        response = client.post("/sdapi/v1/options", json=sent)
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == {"CLIP_stop_at_last_layers": 2}
    ignored = response.json()["ignored"]
    assert set(ignored) == {"samples_save", "some_extension_option", "samples_format"}
    assert "read-only" in ignored["samples_format"] and "not an option" in ignored["samples_save"]
    assert "samples_save" in caplog.text and "some_extension_option" in caplog.text
    options = client.get("/sdapi/v1/options").json()
    assert options["CLIP_stop_at_last_layers"] == 2 and options["samples_format"] == "png"
    assert not {"samples_save", "some_extension_option"} & set(options)
    saved = json.loads((api.data_dir / "api-options.json").read_text())
    assert saved == {"CLIP_stop_at_last_layers": 2, "inpainting_mask_weight": 1.0, "sd_vae": "Automatic"}
    assert ApiOptions(api.services).values["CLIP_stop_at_last_layers"] == 2  # what the next start reads
    info = json.loads(client.post("/sdapi/v1/txt2img", json=small()).json()["info"])
    assert info["clip_skip"] == 2 and "Clip skip: 2" in info["infotexts"][0]
    client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})
    bad = client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 0})
    assert bad.status_code == 422 and bad.json()["field"] == "CLIP_stop_at_last_layers"
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1


def test_token_merging_is_saved_to_the_settings_file(client: httpx.Client, api: Server) -> None:
    from sdlocal.settings import read_settings_file

    try:
        response = client.post("/sdapi/v1/options", json={"token_merging_ratio": 0.3})
        assert response.status_code == 200 and response.json()["applied"] == {"token_merging_ratio": 0.3}
        assert read_settings_file(api.services.settings.settings_file)["token_merging_ratio"] == 0.3
        assert client.get("/sdapi/v1/options").json()["token_merging_ratio"] == 0.3
        bad = client.post("/sdapi/v1/options", json={"token_merging_ratio": 2})
        assert bad.status_code == 422 and bad.json()["field"] == "token_merging_ratio"
    finally:
        client.post("/sdapi/v1/options", json={"token_merging_ratio": 0.0})
    assert read_settings_file(api.services.settings.settings_file)["token_merging_ratio"] == 0.0


def test_an_override_model_is_used_once_then_the_previous_one_is_back(client: httpx.Client, api: Server) -> None:
    assert api.services.engine.current_model.name == MODEL_A
    response = client.post("/sdapi/v1/txt2img", json=small(override_settings={"sd_model_checkpoint": MODEL_B,
                                                                              "samples_save": False}))
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["sd_model_name"] == MODEL_B
    assert any("override_settings.samples_save" in warning for warning in info["warnings"])
    # The switch back ran on the queue before the answer came.
    assert api.services.engine.current_model.name == MODEL_A
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith(MODEL_A)
    assert json.loads(client.post("/sdapi/v1/txt2img", json=small()).json()["info"])["sd_model_name"] == MODEL_A


def test_overrides_stay_when_restore_afterwards_is_false(client: httpx.Client, api: Server) -> None:
    body = small(override_settings={"sd_model_checkpoint": MODEL_B, "CLIP_stop_at_last_layers": 2},
                 override_settings_restore_afterwards=False)
    try:
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        assert json.loads(response.json()["info"])["sd_model_name"] == MODEL_B
        assert api.services.engine.current_model.name == MODEL_B
        options = client.get("/sdapi/v1/options").json()
        assert options["sd_model_checkpoint"].startswith(MODEL_B) and options["CLIP_stop_at_last_layers"] == 2
        info = json.loads(client.post("/sdapi/v1/txt2img", json=small()).json()["info"])
        assert info["sd_model_name"] == MODEL_B and info["clip_skip"] == 2
    finally:
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": MODEL_A, "CLIP_stop_at_last_layers": 1})
    assert api.services.engine.current_model.name == MODEL_A


def test_an_unknown_model_is_404_listing_the_known_ones(client: httpx.Client) -> None:
    for response in (client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model"}),
                     client.post("/sdapi/v1/txt2img",
                                 json=small(override_settings={"sd_model_checkpoint": "no-such-model"}))):
        assert response.status_code == 404
        body = response.json()
        assert "no-such-model" in body["detail"] and any(k.startswith(MODEL_A) for k in body["known"])
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith(MODEL_A)


@pytest.mark.parametrize("route", ["txt2img", "options"])
def test_a_lookup_by_hash_does_not_freeze_the_server(route: str, api: Server,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A hash-looking model name hashes every model not hashed yet (whole files): the server must go on
    answering meanwhile. The hasher here blocks until the test has seen ``/health`` answer."""
    engine = api.services.engine
    hashing, release = threading.Event(), threading.Event()

    def blocking_hash(_entry: Any) -> str:
        hashing.set()
        release.wait(120)
        return "ffffffffff"

    monkeypatch.setattr(engine._get_catalog(), "short_hash", blocking_hash)
    for entry in engine.models():
        monkeypatch.setattr(entry, "short_hash", None)
    wanted = {"sd_model_checkpoint": "0123456789"}
    run = Background(api, f"/sdapi/v1/{route}", small(override_settings=wanted) if route == "txt2img" else wanted)
    try:
        assert hashing.wait(60), "the lookup never reached the hasher"
        with api.client(timeout=30) as http:
            assert http.get("/health").status_code == 200
            assert http.get("/sdapi/v1/progress").status_code == 200
        assert not release.is_set() and run.thread.is_alive()  # the lookup is still blocked in the hasher
    finally:
        release.set()
    response = run.result()
    assert response.status_code == 404 and "0123456789" in response.json()["detail"]


def test_find_model_can_match_known_hashes_only(api: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The non-blocking path for callers on an event loop (the UI): ``hash_missing=False`` never hashes."""
    from sdlocal.engine.request import ModelNotFoundError

    engine = api.services.engine

    def no_hashing(_entry: Any) -> str:
        raise AssertionError("hash_missing=False must not hash")

    monkeypatch.setattr(engine._get_catalog(), "short_hash", no_hashing)
    known = next(e for e in engine.models() if e.short_hash)
    assert engine.find_model(known.short_hash, hash_missing=False) is known
    monkeypatch.setattr(known, "short_hash", None)
    with pytest.raises(ModelNotFoundError):
        engine.find_model("0123456789", hash_missing=False)


def test_refresh_checkpoints_finds_a_new_model(client: httpx.Client, api: Server) -> None:
    from sdlocal.engine.synthetic import save_tiny_model

    save_tiny_model(api.models_dir / "tiny-late", family="sd1", fmt="diffusers")
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    assert "tiny-late" in [m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()]


# ---------------------------------------------------------------------------------------------- lists
def test_samplers_and_schedulers(client: httpx.Client) -> None:
    samplers = client.get("/sdapi/v1/samplers").json()
    by_name = {s["name"]: s for s in samplers}
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM"} <= set(by_name)
    assert "k_euler_a" in by_name["Euler a"]["aliases"] and by_name["Euler"]["options"] == {}
    schedulers = client.get("/sdapi/v1/schedulers").json()
    assert {(s["name"], s["label"]) for s in schedulers} >= {("automatic", "Automatic"), ("karras", "Karras")}


def test_features_sdlocal_lacks_have_no_routes(client: httpx.Client) -> None:
    """No hypernetworks: a 404 says so, where an empty list would claim there are none. Embeddings and LoRAs
    exist."""
    missing = client.get("/sdapi/v1/hypernetworks")
    assert missing.status_code == 404 and missing.json()["error"] == "Not Found"
    paths = client.get("/openapi.json").json()["paths"]
    assert "/sdapi/v1/hypernetworks" not in paths and "/sdapi/v1/refresh-hypernetworks" not in paths
    for route in ("embeddings", "refresh-embeddings", "loras", "refresh-loras"):
        assert f"/sdapi/v1/{route}" in paths
    assert client.get("/sdapi/v1/embeddings").status_code == 200
    assert client.get("/sdapi/v1/loras").status_code == 200


def test_memory(client: httpx.Client) -> None:
    memory = client.get("/sdapi/v1/memory").json()
    ram = memory["ram"]
    assert ram["total"] > 0 and ram["used"] + ram["free"] == ram["total"]
    assert "error" in memory["cuda"] or memory["cuda"]["system"]["total"] > 0


def test_png_info_reads_the_parameters_back(client: httpx.Client) -> None:
    image = client.post("/sdapi/v1/txt2img", json=small(seed=4321)).json()["images"][0]
    for sent in (image, "data:image/png;base64," + image):
        body = client.post("/sdapi/v1/png-info", json={"image": sent}).json()
        assert body["info"].startswith("a red cube\nNegative prompt: blurry\n")
        assert body["items"]["parameters"] == body["info"]
        assert body["parameters"]["Seed"] == "4321" and body["parameters"]["Prompt"] == "a red cube"
    bad = client.post("/sdapi/v1/png-info", json={"image": "not an image"})
    assert bad.status_code == 422 and bad.json()["field"] == "image"


def test_png_info_reads_jpeg_exif_and_late_png_chunks_like_the_ui(client: httpx.Client) -> None:
    """The API and the UI's PNG Info share one reader (sdlocal.outputs.read_image_info)."""
    from PIL.PngImagePlugin import PngInfo

    text = "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 8x8"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + text.encode("utf-16-be")
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG", exif=exif)
    body = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(jpeg.getvalue()).decode()}).json()
    assert body["info"] == text and body["parameters"]["Seed"] == "5"
    meta = PngInfo()
    meta.add_text("parameters", text)
    meta.add_text("Software", "other tool")
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG", pnginfo=meta)
    body = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(png.getvalue()).decode()}).json()
    assert body["info"] == text and body["items"] == {"parameters": text, "Software": "other tool"}


# ---------------------------------------------------------------------------------------------- progress
class StepGate:
    """Holds the running generation inside its progress callback once it reaches step ``at``.

    With the worker held, "running" and "queued" are states a test observes for certain, however fast or slow
    the machine; ``move_to`` lets the run go on to a later step and ``open`` lets it finish.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.at: int | None = None
        self.held: int | None = None

    def on_step(self, step: int) -> None:
        with self.cond:
            if self.at is None or step < self.at:
                return
            self.held = step
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.at is None or step < self.at, timeout=120)
            self.held = None

    def hold_at(self, step: int) -> None:
        with self.cond:
            self.at = step
            self.cond.notify_all()

    move_to = hold_at

    def wait_held(self) -> int:
        """Block until the run is held at (or past) the wanted step; returns that step."""
        with self.cond:
            assert self.cond.wait_for(lambda: self.held is not None and self.at is not None
                                      and self.held >= self.at, timeout=120), "the run never reached the gate"
            assert self.held is not None
            return self.held

    def open(self) -> None:
        with self.cond:
            self.at = None
            self.cond.notify_all()


@pytest.fixture
def gate(api: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[StepGate]:
    engine = api.services.engine
    real = engine.generate
    step_gate = StepGate()

    def gated(request: Any, on_progress: Any = None, control: Any = None) -> Any:
        def progress(update: Any) -> None:
            if on_progress is not None:
                on_progress(update)
            step_gate.on_step(update.step)

        return real(request, on_progress=progress, control=control)  # the job's own Interrupt/Skip

    monkeypatch.setattr(engine, "generate", gated)
    yield step_gate
    step_gate.open()


def job_count(client: httpx.Client) -> int:
    return client.get("/sdapi/v1/progress", params={"skip_current_image": True}).json()["state"]["job_count"]


def send_then_hang_up(api: Server, body: dict[str, Any]) -> socket.socket:
    """POST a txt2img on a raw connection the test closes when it wants: a client that goes away, exactly then."""
    port = int(api.url.rsplit(":", 1)[1])
    connection = socket.create_connection(("127.0.0.1", port))
    data = json.dumps(body).encode()
    head = (f"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n")
    connection.sendall(head.encode() + data)
    return connection


def test_progress_moves_during_a_generation_and_interrupt_stops_it(client: httpx.Client, api: Server,
                                                                   gate: StepGate) -> None:
    idle = client.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    gate.hold_at(2)
    run = Background(api, "/sdapi/v1/txt2img", small(steps=20, n_iter=3))
    assert gate.wait_held() == 2
    first = client.get("/sdapi/v1/progress").json()
    assert first["state"]["job_count"] == 1 and first["state"]["sampling_steps"] == 20
    assert first["state"]["sampling_step"] == 2 and first["state"]["job_no"] == 0
    assert first["state"]["job"].startswith("task(") and 0 < first["progress"] < 1
    gate.move_to(7)
    assert gate.wait_held() == 7
    later = client.get("/sdapi/v1/progress").json()
    assert later["state"]["sampling_step"] == 7 and later["progress"] > first["progress"]
    assert later["eta_relative"] >= 0 and later["textinfo"].startswith("Step 7/20")
    if later["current_image"] is not None:
        assert decode_png(later["current_image"]).size[0] > 0
    assert client.post("/sdapi/v1/interrupt").json() == {}
    gate.open()
    response = run.result()
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["interrupted"] is True and response.json()["images"] == []  # stopped inside the first batch
    assert job_count(client) == 0


def test_skip_abandons_the_current_batch_and_goes_on(client: httpx.Client, api: Server, gate: StepGate) -> None:
    gate.hold_at(2)
    run = Background(api, "/sdapi/v1/txt2img", small(steps=20, n_iter=2, seed=5000))
    gate.wait_held()
    assert client.post("/sdapi/v1/skip").json() == {}
    gate.open()
    response = run.result()
    info = json.loads(response.json()["info"])
    assert info["all_seeds"] == [5001] and len(response.json()["images"]) == 1


def test_past_the_queue_bound_the_api_answers_503_with_retry_after(client: httpx.Client, api: Server,
                                                                    gate: StepGate) -> None:
    gate.hold_at(1)
    long_run = Background(api, "/sdapi/v1/txt2img", small(steps=20, n_iter=5))
    gate.wait_held()
    waiting = [Background(api, "/sdapi/v1/txt2img", small(seed=10 + i)) for i in range(2)]
    wait_for(lambda: job_count(client) == 3)  # both queued behind the held run (the queue holds 2)
    refused = client.post("/sdapi/v1/txt2img", json=small())
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1 and "queue is full" in refused.json()["detail"]
    client.post("/sdapi/v1/interrupt")
    gate.open()
    assert long_run.result().status_code == 200
    for run, seed in zip(waiting, (10, 11), strict=True):
        response = run.result()
        assert response.status_code == 200 and json.loads(response.json()["info"])["seed"] == seed


def test_a_client_that_disconnects_breaks_nothing(client: httpx.Client, api: Server, gate: StepGate) -> None:
    queue = api.services.queue
    done_before, cancelled_before = queue.jobs_finished["done"], queue.jobs_finished["cancelled"]
    gate.hold_at(1)
    long_run = Background(api, "/sdapi/v1/txt2img", small(steps=20, n_iter=2))
    gate.wait_held()
    # A queued request whose client goes away is taken out of the queue ...
    impatient = send_then_hang_up(api, small(seed=99))
    wait_for(lambda: job_count(client) == 2)
    impatient.close()
    wait_for(lambda: job_count(client) == 1)
    assert queue.jobs_finished["cancelled"] == cancelled_before + 1
    client.post("/sdapi/v1/interrupt")
    gate.open()
    long_run.result()
    # ... and the running one, whose client also goes away, finishes without harming the next job.
    gate.hold_at(1)
    impatient = send_then_hang_up(api, small(steps=4, n_iter=2, seed=98))
    gate.wait_held()
    impatient.close()
    gate.open()
    response = client.post("/sdapi/v1/txt2img", json=small(seed=97))
    assert response.status_code == 200 and json.loads(response.json()["info"])["all_seeds"] == [97]
    # The abandoned run and this one both completed (the counter moves just after the job's own result).
    wait_for(lambda: queue.jobs_finished["done"] == done_before + 2)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("values", "field", "mentions"), [
    ({"width": 100}, "width", "multiple of 8"),
    ({"steps": 1000}, "steps", "1000"),
    ({"sampler_name": "Nope"}, "sampler_name", "Nope"),
    ({"n_iter": 0}, "n_iter", "0"),
    ({"steps": "many"}, "steps", "integer"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 99}}, "override_settings.CLIP_stop_at_last_layers", "99"),
])
def test_a_bad_request_is_422_naming_the_a1111_field(client: httpx.Client, values: dict, field: str,
                                                     mentions: str) -> None:
    response = client.post("/sdapi/v1/txt2img", json=small(**values))
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == field and body["detail"].startswith(field) and mentions in body["detail"]
    assert set(body) >= {"error", "detail", "errors"}


def test_an_internal_error_is_500_without_internals_and_the_server_goes_on(client: httpx.Client, api: Server,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    engine = api.services.engine

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(engine, "samplers", broken)
    monkeypatch.setattr(engine, "generate", broken)
    for response in (client.get("/sdapi/v1/samplers"), client.post("/sdapi/v1/txt2img", json=small())):
        assert response.status_code == 500
        assert "secret" not in response.text and "Traceback" not in response.text
        assert "incident" in response.json()["detail"]
    monkeypatch.undo()
    assert client.get("/sdapi/v1/samplers").status_code == 200
    assert client.post("/sdapi/v1/txt2img", json=small()).status_code == 200


def test_openapi_description_is_served(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/sdapi/v1/txt2img", "/sdapi/v1/options", "/sdapi/v1/progress", "/health", "/metrics"} <= set(paths)
