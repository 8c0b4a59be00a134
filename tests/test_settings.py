"""Settings: one precedence (defaults < settings.json < SDLOCAL_* < flags), clear errors, atomic saved files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdlocal.engine.request import RequestError
from sdlocal.settings import GENERATED_USER, Settings, SettingsError, parse_auth, read_auth_file, resolve


def test_defaults(tmp_path):
    s = resolve({"data_dir": tmp_path}, env={})
    assert (s.port, s.listen, s.host, s.device, s.precision, s.attention) == (7860, False, "127.0.0.1", "auto",
                                                                             "auto", "auto")
    assert s.outputs_dir == tmp_path / "outputs"
    assert s.presets_dir == tmp_path / "presets"
    assert s.state_file == tmp_path / "state.json"
    assert s.models_dir == tmp_path / "models"
    assert s.hash_cache.parent.parent == tmp_path


def test_data_dir_defaults_to_platformdirs(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    s = resolve({}, env={})
    assert s.data_dir == tmp_path / "xdg" / "sdlocal"


def test_precedence_file_then_env_then_flags(tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps({"port": 7001, "precision": "fp32", "listen": True,
                                                        "models_dirs": ["/models/a"]}))
    from_file = resolve({"data_dir": tmp_path}, env={})
    assert (from_file.port, from_file.precision, from_file.listen) == (7001, "fp32", True)
    assert from_file.models_dirs == [Path("/models/a")]
    env = {"SDLOCAL_PORT": "7002", "SDLOCAL_LISTEN": "0", "SDLOCAL_MODELS_DIRS": "/m/b:/m/c"}
    from_env = resolve({"data_dir": tmp_path}, env=env)
    assert (from_env.port, from_env.precision, from_env.listen) == (7002, "fp32", False)
    assert from_env.models_dirs == [Path("/m/b"), Path("/m/c")]
    from_flags = resolve({"data_dir": tmp_path, "port": 7003}, env=env)
    assert (from_flags.port, from_flags.precision) == (7003, "fp32")


def test_data_dir_from_env_and_flag(tmp_path):
    env = {"SDLOCAL_DATA_DIR": str(tmp_path / "env")}
    assert resolve({}, env=env).data_dir == tmp_path / "env"
    assert resolve({"data_dir": tmp_path / "flag"}, env=env).data_dir == tmp_path / "flag"


def test_data_dir_cannot_come_from_its_own_settings_file(tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps({"data_dir": "/elsewhere"}))
    with pytest.raises(SettingsError, match="--data-dir or SDLOCAL_DATA_DIR"):
        resolve({"data_dir": tmp_path}, env={})


def test_bad_settings_file_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{not json")
    with pytest.raises(SettingsError) as info:
        resolve({"data_dir": tmp_path}, env={})
    assert str(path) in str(info.value) and "delete it" in str(info.value)
    path.write_text(json.dumps({"prot": 1}))
    with pytest.raises(SettingsError, match="Did you mean 'port'"):
        resolve({"data_dir": tmp_path}, env={})
    path.write_text(json.dumps({"port": "many"}))
    with pytest.raises(SettingsError, match=r"settings.json: port: 'many' is not valid. Use a whole number"):
        resolve({"data_dir": tmp_path}, env={})


def test_bad_values_name_the_option_and_the_choices(tmp_path):
    with pytest.raises(SettingsError, match=r"precision: 'fp8' is not valid. Choose one of: auto, fp16, bf16, fp32"):
        resolve({"data_dir": tmp_path}, env={"SDLOCAL_PRECISION": "fp8"})
    with pytest.raises(SettingsError, match="SDLOCAL_LISTEN: 'maybe'"):
        resolve({"data_dir": tmp_path}, env={"SDLOCAL_LISTEN": "maybe"})
    with pytest.raises(SettingsError, match="port: 70000"):
        Settings(data_dir=tmp_path, port=70000)


def test_misspelt_environment_variable_gets_a_note_and_others_are_left_alone(tmp_path):
    s = resolve({"data_dir": tmp_path}, env={"SDLOCAL_PROT": "1", "SDLOCAL_CHROMIUM": "/usr/bin/chromium"})
    assert s.notes == ["SDLOCAL_PROT is not a setting and was ignored; did you mean SDLOCAL_PORT?"]
    assert s.port == 7860


def test_xformers_flag_is_attention_xformers(tmp_path):
    assert resolve({"data_dir": tmp_path, "xformers": True}, env={}).attention == "xformers"
    assert resolve({"data_dir": tmp_path}, env={"SDLOCAL_XFORMERS": "1"}).xformers is True


def test_engine_config_carries_the_engine_options(tmp_path):
    s = Settings(data_dir=tmp_path, models_dirs=[tmp_path / "a1111"], device="cpu", precision="fp32",
                 no_half_vae=True, attention="sdpa", token_merging_ratio=0.3, max_loaded_models=2)
    cfg = s.to_engine_config()
    assert (cfg.data_dir, cfg.models_dirs, cfg.device, cfg.precision, cfg.no_half_vae, cfg.attention,
            cfg.token_merging_ratio, cfg.max_loaded_models) == (tmp_path, [tmp_path / "a1111"], "cpu", "fp32", True,
                                                                "sdpa", 0.3, 2)


def test_auth_parsing():
    assert parse_auth("me:pw, you:p:w") == [("me", "pw"), ("you", "p:w")]
    with pytest.raises(SettingsError, match="user:password"):
        parse_auth("nopassword")
    with pytest.raises(SettingsError) as info:
        parse_auth("me:")
    assert "me" in str(info.value)


def test_auth_file(tmp_path):
    path = tmp_path / "logins.txt"
    path.write_text("a:1\nb:2,c:3\n")
    assert read_auth_file(path) == [("a", "1"), ("b", "2"), ("c", "3")]
    s = Settings(data_dir=tmp_path, gradio_auth=[("x", "y")], gradio_auth_path=path)
    assert s.auth == [("x", "y"), ("a", "1"), ("b", "2"), ("c", "3")]
    with pytest.raises(SettingsError, match="cannot be read"):
        read_auth_file(tmp_path / "missing.txt")


def test_sharing_without_credentials_generates_a_password_once(tmp_path):
    s = Settings(data_dir=tmp_path, listen=True)
    message = s.secure_sharing()
    assert s.generated_password and len(s.generated_password) >= 12
    assert f"user: {GENERATED_USER}" in message and s.generated_password in message
    assert s.auth == [(GENERATED_USER, s.generated_password)]
    assert s.generated_password not in json.dumps(s.public_dict())


def test_sharing_with_credentials_or_no_auth(tmp_path):
    with_auth = Settings(data_dir=tmp_path, share=True, gradio_auth=[("me", "pw")])
    assert with_auth.secure_sharing() is None and with_auth.auth == [("me", "pw")]
    opted_out = Settings(data_dir=tmp_path, listen=True, no_auth=True)
    assert "WARNING: --no-auth" in opted_out.secure_sharing()
    assert opted_out.auth == []
    local = Settings(data_dir=tmp_path)
    assert local.secure_sharing() is None and local.auth == []


def test_save_settings_round_trip_and_refuses_bad_values(tmp_path):
    s = Settings(data_dir=tmp_path)
    s.save_settings({"precision": "fp32", "models_dirs": [tmp_path / "m"]})
    again = resolve({"data_dir": tmp_path}, env={})
    assert again.precision == "fp32" and again.models_dirs == [tmp_path / "m"]
    before = s.settings_file.read_text()
    with pytest.raises(SettingsError):
        s.save_settings({"port": "x"})
    assert s.settings_file.read_text() == before


def test_ui_state_keeps_other_keys_and_survives_damage(tmp_path):
    s = Settings(data_dir=tmp_path)
    s.state_file.write_text(json.dumps({"other": 1}))
    s.save_ui_state({"model": "tiny", "steps": 4})
    assert s.load_ui_state() == {"model": "tiny", "steps": 4}
    assert json.loads(s.state_file.read_text())["other"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    s.state_file.write_text("{broken")
    assert s.load_ui_state() == {}


def test_public_dict_hides_passwords(tmp_path):
    s = Settings(data_dir=tmp_path, gradio_auth=[("me", "s3cr3t-pw")], api_auth=[("api", "k3y-xyz")])
    text = json.dumps(s.public_dict())
    assert "s3cr3t-pw" not in text and "k3y-xyz" not in text and "me:***" in text


def test_sd2_prediction_default_reaches_the_engine_and_is_checked(tmp_path):
    assert Settings(data_dir=tmp_path).to_engine_config().sd2_prediction == "v_prediction"
    s = resolve({"data_dir": tmp_path}, env={"SDLOCAL_SD2_PREDICTION": "epsilon"})
    assert s.to_engine_config().sd2_prediction == "epsilon"
    with pytest.raises(SettingsError, match="sd2_prediction: 'v' is not valid. Choose one of: v_prediction, epsilon"):
        Settings(data_dir=tmp_path, sd2_prediction="v")


def test_emphasis_is_a1111s_option_saved_like_the_others_and_checked(tmp_path):
    assert Settings(data_dir=tmp_path).emphasis == "Original"
    assert Settings(data_dir=tmp_path, emphasis="no norm").emphasis == "No norm"  # A1111's names, any case
    Settings(data_dir=tmp_path).save_settings({"emphasis": "Ignore"})
    assert resolve({"data_dir": tmp_path}, env={}).emphasis == "Ignore"
    assert resolve({"data_dir": tmp_path}, env={"SDLOCAL_EMPHASIS": "No norm"}).emphasis == "No norm"
    with pytest.raises(SettingsError, match="emphasis.*.Loud. is not valid. Choose one of: Original, No norm, Ignore"):
        Settings(data_dir=tmp_path).save_settings({"emphasis": "Loud"})
    with pytest.raises(SettingsError, match="emphasis"):
        Settings(data_dir=tmp_path, emphasis="Loud")


def test_emphasis_flag_and_the_generate_command_carries_the_setting(tmp_path, monkeypatch):
    import io

    from sdlocal import cli

    assert cli.parse_args(["--data-dir", str(tmp_path), "--emphasis", "No norm"], env={}).emphasis == "No norm"
    seen = []

    class Engine:
        def __init__(self, config):
            pass

        def generate(self, request):
            seen.append(request)
            raise RequestError("model", request.model, "is a stand-in")

    monkeypatch.setattr("sdlocal.engine.Engine", Engine)
    invocation = cli.parse_command(["generate", "--data-dir", str(tmp_path), "--emphasis", "Ignore", "--model", "m",
                                    "--prompt", "p", "--out", str(tmp_path / "o")], env={})
    assert cli.run_generate(invocation.settings, invocation.options, out=io.StringIO(), err=io.StringIO()) == 2
    assert seen[0].emphasis == "Ignore"
