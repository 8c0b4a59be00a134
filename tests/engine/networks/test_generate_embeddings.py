"""An embedding file in the embeddings folder is used where its trigger (the file name) is in the prompt, as in
A1111: the image changes where the trigger is used and is identical where it is not, and the infotext names it
with its hash (``TI hashes: "name: hash"``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.engine.conftest import make_engine, pixels
from tests.engine.networks import files


def _ti_hashes(infotext: str) -> str | None:
    for part in infotext.splitlines()[-1].split(", "):
        if part.startswith("TI hashes: "):
            return part[len("TI hashes: "):]
    return None


def test_an_embedding_file_changes_the_image_only_where_its_trigger_is_used(own: Path, data_dir: Path,
                                                                            tiny_models_dir: Path,
                                                                            request_for) -> None:
    engine = make_engine(tiny_models_dir, data_dir, device="cpu", precision="fp32")
    with_trigger = dict(prompt="a tinytrigger on a table", seed=77)
    in_negative = dict(prompt="a red cube", negative_prompt="tinytrigger, blurry", seed=77)
    without = dict(prompt="a red cube on a table", seed=77)

    def run(**values: object):
        return engine.generate(request_for(**values)).images[0]

    before = {name: run(**values) for name, values in
              (("with", with_trigger), ("negative", in_negative), ("without", without))}
    path = files.emb_params(own / "tinytrigger.safetensors", files.vectors(2, 32, seed=5) * 3)
    # no refresh: the next run looks in the folder again, as A1111 does
    after = {name: run(**values) for name, values in
             (("with", with_trigger), ("negative", in_negative), ("without", without))}
    loaded, _ = engine.embeddings()
    assert list(loaded) == ["tinytrigger"]

    assert (pixels(after["without"].image) == pixels(before["without"].image)).all()
    assert (pixels(after["with"].image) != pixels(before["with"].image)).any()
    assert (pixels(after["negative"].image) != pixels(before["negative"].image)).any()
    expected = f'"tinytrigger: {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"'
    assert _ti_hashes(after["with"].infotext) == expected == _ti_hashes(after["negative"].infotext)
    assert _ti_hashes(after["without"].infotext) is None and _ti_hashes(before["with"].infotext) is None


def test_an_sdxl_shaped_embedding_on_the_tiny_sdxl_model(own: Path, data_dir: Path, tiny_models_dir: Path,
                                                         request_for) -> None:
    engine = make_engine(tiny_models_dir, data_dir, device="cpu", precision="fp32")
    request = dict(model="tiny-sdxl-diffusers", prompt="a xltrigger here", seed=3)
    before = engine.generate(request_for(**request)).images[0]
    files.sdxl(own / "xltrigger.safetensors", files.vectors(1, 32, seed=1) * 3, files.vectors(1, 48, seed=2) * 3)
    files.emb_params(own / "sd1only.safetensors", files.vectors(1, 32))  # the wrong widths: skipped, not used
    loaded, skipped = engine.embeddings(refresh=True)
    assert list(loaded) == ["xltrigger"] and "sd1only" in skipped
    result = engine.generate(request_for(**request))
    after = result.images[0]
    assert (pixels(after.image) != pixels(before.image)).any()
    assert _ti_hashes(after.infotext).startswith('"xltrigger: ')
    assert not [w for w in result.warnings if "embedding" in w]

    # The wrong-family embedding written in the prompt is not used, and the result says so (A1111 stays silent).
    result = engine.generate(request_for(**{**request, "negative_prompt": "(SD1ONLY:1.2), blurry"}))
    warned = [w for w in result.warnings if "sd1only" in w]
    assert len(warned) == 1 and "made for" in warned[0] and "plain words" in warned[0]
    assert _ti_hashes(result.images[0].infotext) == _ti_hashes(after.infotext)  # only the one used
