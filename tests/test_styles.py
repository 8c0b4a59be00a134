"""Prompt styles, as A1111's styles.csv and Fooocus's style files define them, and A1111's rule for applying them."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from sdlocal.engine.request import RequestError
from sdlocal.styles import Style, StyleLibrary, apply_styles, apply_to, merge, read_csv


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


# ----- A1111's rule ----------------------------------------------------------------------------------------------

def test_a_style_with_the_prompt_placeholder_wraps_the_prompt():
    assert merge("a photo of {prompt}, 35mm", "a cat") == "a photo of a cat, 35mm"


def test_a_style_without_the_placeholder_is_appended_after_a_comma():
    assert merge("oil painting, masterpiece", "a cat") == "a cat, oil painting, masterpiece"


def test_empty_parts_are_left_out_when_appending():
    assert merge("oil painting", "") == "oil painting"
    assert merge("", "a cat") == "a cat"
    assert merge("", "") == ""


def test_several_styles_apply_in_the_order_chosen_to_prompt_and_negative():
    wrap = Style("wrap", "photo of {prompt}", "blurry, {prompt}")
    tail = Style("tail", "8k", "lowres")
    assert apply_to("a cat", "ugly", [wrap, tail]) == ("photo of a cat, 8k", "blurry, ugly, lowres")
    assert apply_to("a cat", "ugly", [tail, wrap]) == ("photo of a cat, 8k", "blurry, ugly, lowres")
    assert apply_to("a cat", "", [Style("only", "{prompt} {prompt}")]) == ("a cat a cat", "")


# ----- reading styles.csv ------------------------------------------------------------------------------------------

def test_styles_csv_is_read_with_quoted_commas_and_a_byte_order_mark(tmp_path):
    path = write(tmp_path / "styles.csv", 'name,prompt,negative_prompt\n'
                                          '"Cinematic","film still of {prompt}, bokeh","cartoon, drawing"\n'
                                          'Plain,"oil painting, canvas",\n', encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    styles = read_csv(path)
    assert [(s.name, s.prompt, s.negative_prompt) for s in styles] == [
        ("Cinematic", "film still of {prompt}, bokeh", "cartoon, drawing"), ("Plain", "oil painting, canvas", "")]


def test_the_old_text_column_is_the_prompt_and_unknown_columns_are_ignored(tmp_path):
    old = write(tmp_path / "old.csv", "name,text\nRetro,retro poster\n")
    extra = write(tmp_path / "extra.csv", "name,prompt,negative_prompt,description\nA,x,y,what it does\n,nameless,\n")
    assert [(s.name, s.prompt, s.negative_prompt) for s in read_csv(old)] == [("Retro", "retro poster", "")]
    assert [(s.name, s.prompt, s.negative_prompt) for s in read_csv(extra)] == [("A", "x", "y")]


def test_a_broken_styles_file_is_a_warning_and_no_styles(tmp_path, caplog):
    not_text = tmp_path / "binary.csv"
    not_text.write_bytes(b"name,prompt\n\xff\xfe\x00 junk\n")
    no_header = write(tmp_path / "noheader.csv", "Cinematic,film still\nRetro,poster\n")
    with caplog.at_level(logging.WARNING, logger="sdlocal.styles"):
        assert read_csv(not_text) == []
        assert read_csv(no_header) == []
        assert read_csv(tmp_path / "missing.csv") == []
    assert str(not_text) in caplog.text and str(no_header) in caplog.text


# ----- where styles come from ----------------------------------------------------------------------------------

def test_styles_come_from_the_data_dir_and_each_a1111_root(tmp_path):
    data, root, other = tmp_path / "data", tmp_path / "a1111", tmp_path / "forge"
    write(data / "styles.csv", "name,prompt,negative_prompt\nMine,my style,\nShared,from the data dir,\n")
    write(root / "styles.csv", "name,prompt,negative_prompt\nShared,from the root,\nRoot,root style,\n")
    write(other / "styles.csv", "name,prompt\nForge,forge style\n")
    library = StyleLibrary(data, [root, other / "models"])  # a root given as its models folder: one level up
    assert library.names() == ["Mine", "Shared", "Root", "Forge"]
    assert library.get("Shared").prompt == "from the data dir"  # the data dir's wins


def test_fooocus_style_files_are_read_with_names_as_written(tmp_path):
    root = tmp_path / "Fooocus"
    write(root / "sdxl_styles" / "sdxl_styles_fooocus.json", json.dumps([
        {"name": "Fooocus Sharp", "prompt": "cinematic still {prompt} . sharp focus", "negative_prompt": "blurry"},
        {"name": "Fooocus Masterpiece", "prompt": "(masterpiece), {prompt}"},
        {"prompt": "no name: skipped"},
    ]))
    write(root / "sdxl_styles" / "broken.json", "{not json")
    library = StyleLibrary(tmp_path / "data", [root / "models"])
    assert library.names() == ["Fooocus Sharp", "Fooocus Masterpiece"]
    assert library.apply("a fox", "", ["Fooocus Sharp"]) == ("cinematic still a fox . sharp focus", "blurry")


def test_an_unknown_style_is_an_error_naming_the_field_and_the_known_styles(tmp_path):
    write(tmp_path / "styles.csv", "name,prompt\nCinematic,film still\n")
    library = StyleLibrary(tmp_path)
    with pytest.raises(RequestError) as caught:
        library.apply("a cat", "", ["Cinematic", "Nope"])
    assert caught.value.field == "styles" and caught.value.value == "Nope"
    assert "must name a known style" in caught.value.allowed and "Cinematic" in caught.value.allowed


def test_no_style_names_change_nothing_even_without_a_library():
    assert apply_styles("a cat", "ugly", [], None) == ("a cat", "ugly")
    assert apply_styles("a cat", "ugly", None, None) == ("a cat", "ugly")
    with pytest.raises(RequestError):
        apply_styles("a cat", "", ["Cinematic"], None)


# ----- saving ------------------------------------------------------------------------------------------------------

def test_a_saved_style_is_written_to_the_data_dir_and_read_back(tmp_path):
    library = StyleLibrary(tmp_path / "data")
    library.save("Night", "{prompt}, at night, stars", "sun, daylight")
    assert library.apply("a lake", "", ["Night"]) == ("a lake, at night, stars", "sun, daylight")
    again = StyleLibrary(tmp_path / "data")
    assert [(s.name, s.prompt, s.negative_prompt) for s in again.styles()] == [
        ("Night", "{prompt}, at night, stars", "sun, daylight")]
    header = (tmp_path / "data" / "styles.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "name,prompt,negative_prompt"


def test_saving_a_name_again_replaces_that_style_and_keeps_the_others(tmp_path):
    data = tmp_path / "data"
    write(data / "styles.csv", "name,prompt,negative_prompt\nA,first a,\nB,b,\n")
    library = StyleLibrary(data)
    library.save("A", "second a", "neg")
    assert [(s.name, s.prompt, s.negative_prompt) for s in read_csv(data / "styles.csv")] == [
        ("B", "b", ""), ("A", "second a", "neg")]


def test_saving_is_atomic_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write(data / "styles.csv", "name,prompt\nA,a\n")
    library = StyleLibrary(data)

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        library.save("B", "b", "")
    assert (data / "styles.csv").read_text() == "name,prompt\nA,a\n"
    assert [p.name for p in data.iterdir()] == ["styles.csv"]  # no temporary file left behind


def test_a_style_needs_a_name_to_be_saved(tmp_path):
    with pytest.raises(RequestError) as caught:
        StyleLibrary(tmp_path).save("  ", "x", "")
    assert caught.value.field == "name"


def test_deleting_a_saved_style(tmp_path):
    library = StyleLibrary(tmp_path)
    library.save("A", "a", "")
    library.save("B", "b", "")
    library.delete("A")
    assert library.names() == ["B"]
    with pytest.raises(RequestError):
        library.delete("A")


# ----- sdlocal generate --style ------------------------------------------------------------------------------------

def test_generate_style_flag_expands_the_prompt_written_into_the_png(tmp_path):
    import io

    from sdlocal import cli
    from sdlocal.engine.synthetic import save_tiny_model
    from sdlocal.outputs import read_image_parameters

    data = tmp_path / "data"
    save_tiny_model(data / "models" / "Stable-diffusion" / "tiny.safetensors", family="sd1", fmt="safetensors")
    StyleLibrary(data).save("Night", "{prompt} at night", "sun")
    argv = ["generate", "--data-dir", str(data), "--device", "cpu", "--precision", "fp32", "--model", "tiny",
            "--prompt", "a lake", "--style", "Night", "--steps", "2", "--width", "64", "--height", "64",
            "--out", str(tmp_path / "out")]
    invocation = cli.parse_command(argv, env={})
    out, err = io.StringIO(), io.StringIO()
    assert cli.run_generate(invocation.settings, invocation.options, out=out, err=err) == 0, err.getvalue()
    path = Path(out.getvalue().split("\t")[0])
    assert read_image_parameters(path).startswith("a lake at night\nNegative prompt: sun\n")


def test_generate_unknown_style_names_the_flag_and_exits_2(tmp_path):
    import io

    from sdlocal import cli

    invocation = cli.parse_command(["generate", "--data-dir", str(tmp_path), "--model", "x", "--prompt", "p",
                                    "--style", "Nope", "--out", str(tmp_path / "o")], env={})
    err = io.StringIO()
    assert cli.run_generate(invocation.settings, invocation.options, out=io.StringIO(), err=err) == 2
    assert "styles: 'Nope' is not allowed; must name a known style" in err.getvalue() and "--style" in err.getvalue()
