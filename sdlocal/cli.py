"""The ``sdlocal`` command: flags (A1111's names where they exist) and the subcommands.

``sdlocal [serve] [flags]`` starts the web UI; ``sdlocal doctor`` prints the environment report;
``sdlocal generate --model NAME --prompt TEXT --out DIR`` makes images without the UI (``--init-image`` and
``--mask`` make it img2img and inpainting, with A1111's controls as flags); ``sdlocal selftest``
generates one image with a tiny random-weight model to prove the device works. ``--doctor`` and ``--selftest``
are the same as the subcommands (for ``webui.sh --doctor``).

Only the options the user actually typed are passed on to :func:`sdlocal.settings.resolve`, so the saved
settings file and ``SDLOCAL_*`` variables still apply to everything else.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from sdlocal.cli_hires import HIRES_KEYS, add_hires_flags, hires_flag, hires_part
from sdlocal.cli_img2img import SOURCE_KEYS, add_img2img_flags, flag_message, image_source
from sdlocal.cluster.cli import add_cluster_parser
from sdlocal.engine.config import ATTENTIONS, DEVICES, PRECISIONS, SD2_PREDICTIONS
from sdlocal.engine.request import EMPHASIS_MODES, RequestError
from sdlocal.settings import DEFAULT_PORT, THEMES, Settings, SettingsError, parse_auth, resolve

COMMANDS = ("serve", "doctor", "generate", "selftest")


class FlagParser(argparse.ArgumentParser):
    """argparse that names the closest known flag when given an unknown one (``--lsiten`` -> ``--listen``)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            known = known_flags(self)
            hints = []
            for arg in message.split(":", 1)[1].split():
                if not arg.startswith("-"):
                    continue
                close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1, cutoff=0.6)
                hints.append(f"{arg}: did you mean {close[0]}?" if close else f"{arg}: no such flag")
            if hints:
                message += "\n  " + "\n  ".join(hints)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n  (see --help for every flag)\n")


def known_flags(parser: argparse.ArgumentParser) -> list[str]:
    """Every ``--flag`` of the parser and its subcommands (the error may come from either)."""
    flags: list[str] = []
    for action in parser._actions:
        flags += [opt for opt in action.option_strings if opt.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags += known_flags(sub)
    return sorted(set(flags))


def _auth(value: str) -> list[tuple[str, str]]:
    try:
        return parse_auth(value)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that become :class:`Settings` fields (default SUPPRESS: absent means 'not given')."""
    S = argparse.SUPPRESS
    net = parser.add_argument_group("serving")
    net.add_argument("--listen", action="store_true", default=S,
                     help="serve on all network interfaces (0.0.0.0) so other machines can connect; a login is "
                          "required (a password is generated unless --gradio-auth is given)")
    net.add_argument("--port", type=int, default=S, metavar="N",
                     help=f"port for the web UI and API (default {DEFAULT_PORT}; the next free one if it is taken)")
    net.add_argument("--share", action="store_true", default=S,
                     help="also make a public gradio.live link (needs internet; a login is required)")
    net.add_argument("--gradio-auth", type=_auth, default=S, metavar="USER:PASS[,USER2:PASS2]",
                     help="require a login for the web UI")
    net.add_argument("--gradio-auth-path", type=Path, default=S, metavar="FILE",
                     help="read user:password logins from FILE (one per line or comma-separated)")
    net.add_argument("--no-auth", action="store_true", default=S,
                     help="with --listen/--share, do NOT require a login (anyone who can reach it can use it)")
    net.add_argument("--api", action="store_true", default=S, help="enable the A1111-compatible /sdapi/v1 API")
    net.add_argument("--api-auth", type=_auth, default=S, metavar="USER:PASS[,...]",
                     help="require HTTP basic auth for the API")
    net.add_argument("--api-tokens", type=Path, default=S, metavar="FILE",
                     help="also accept API tokens (Authorization: Bearer ...) whose hashes are in FILE; make one with "
                          "`python -m sdlocal.api.tokens FILE NAME`")
    net.add_argument("--api-rate-limit", default=S, metavar="LIMITS",
                     help="generation requests per client (API token, else address), e.g. 30/minute or "
                          "10/minute;200/hour; 'off'. Default: off on localhost, 60/minute with --listen/--share")
    net.add_argument("--api-cache-mb", type=int, default=S, metavar="MB",
                     help="memory for the API's result cache: a request with a fixed seed answered before is answered "
                          "again without generating (default 256; 0 = off)")
    net.add_argument("--nowebui", action="store_true", default=S, help="serve only the API, no web UI (implies --api)")
    net.add_argument("--theme", choices=THEMES, default=S, help="web UI colour theme (default: follow the system)")
    net.add_argument("--tls-keyfile", type=Path, default=S, metavar="FILE",
                     help="serve HTTPS with this PEM private key (with --tls-certfile); use it with --listen and a "
                          "login, or passwords cross the network in clear")
    net.add_argument("--tls-certfile", type=Path, default=S, metavar="FILE",
                     help="the PEM certificate for --tls-keyfile")
    net.add_argument("--queue-size", type=int, default=S, metavar="N",
                     help="most jobs waiting in the queue before new ones are refused (default 64)")

    paths = parser.add_argument_group("folders")
    paths.add_argument("--data-dir", type=Path, default=S, metavar="DIR",
                       help="where models, outputs, presets and settings live (default: the per-user data folder, "
                            "e.g. ~/.local/share/sdlocal; also SDLOCAL_DATA_DIR)")
    paths.add_argument("--models-dir", "--ckpt-dir", dest="models_dirs", type=Path, action="append", default=S,
                       metavar="DIR", help="another folder to find models in: an A1111/Forge/ComfyUI install or a "
                                           "folder of checkpoints (repeatable)")
    paths.add_argument("--extra-model-paths", dest="extra_model_paths", type=Path, action="append", default=S,
                       metavar="FILE", help="a ComfyUI extra_model_paths.yaml to read model folders from")

    run = parser.add_argument_group("device and precision")
    run.add_argument("--device", choices=DEVICES, default=S, help="where to run (default auto: CUDA, MPS, else CPU)")
    run.add_argument("--precision", choices=PRECISIONS, default=S,
                     help="number format (default auto: fp16 on GPUs, bf16 on CPUs that do it in hardware, else fp32)")
    run.add_argument("--no-half-vae", action="store_true", default=S,
                     help="keep the VAE in fp32 (fixes black or NaN images from some fp16 VAEs)")
    run.add_argument("--attention", choices=ATTENTIONS, default=S,
                     help="attention kernel (default auto: PyTorch SDPA)")
    run.add_argument("--xformers", action="store_true", default=S,
                     help="same as --attention xformers (NVIDIA GPUs only; installs the xformers extra)")
    run.add_argument("--medvram", action="store_true", default=S,
                     help="less GPU memory, a little slower: each model part moves to the GPU only while it runs "
                          "(model CPU offload) and the VAE decodes in slices (NVIDIA GPUs; also a UI control)")
    run.add_argument("--lowvram", action="store_true", default=S,
                     help="least GPU memory, much slower: layers move to the GPU one at a time (sequential CPU "
                          "offload) and attention is sliced (NVIDIA GPUs; also a UI control)")
    run.add_argument("--attention-slicing", action="store_true", default=S,
                     help="compute attention in slices: less memory at large sizes, slightly slower")
    run.add_argument("--vae-slicing", action="store_true", default=S,
                     help="decode a batch's images one at a time: less memory for large batches")
    run.add_argument("--cpu-offload", action="store_true", default=S,
                     help="keep models in RAM and move each part to the GPU only while it runs (NVIDIA GPUs)")
    run.add_argument("--fast", action="store_true", default=S,
                     help="fast mode: channels-last, fused attention projections and torch.compile on NVIDIA GPUs "
                          "(the first image at each size compiles); on the CPU channels-last only (a few percent)")
    run.add_argument("--token-merging-ratio", type=float, default=S, metavar="R",
                     help="default token merging ratio, 0 (off) to 0.9: faster, slightly different images")
    run.add_argument("--emphasis", choices=EMPHASIS_MODES, default=S,
                     help="A1111's emphasis mode for (word:1.2) weights: Original (default; the mean is restored), "
                          "'No norm' or Ignore (weights read as 1)")
    run.add_argument("--max-loaded-models", type=int, default=S, metavar="N",
                     help="checkpoints kept in memory at once (default 1)")
    run.add_argument("--sd2-prediction", choices=SD2_PREDICTIONS, default=S,
                     help="SD 2.x single files without a <name>.yaml/.json sidecar: v_prediction (default, SD 2.1 "
                          "768) or epsilon (the 512 base models)")
    run.add_argument("--preset", default=S, help="the preset selected at start (e.g. 'SD 1.5')")
    run.add_argument("--offline", action="store_true", default=S,
                     help="never touch the network (no Hugging Face Hub check, no downloads)")
    run.add_argument("--require-gpu", action="store_true", default=S,
                     help="refuse to start when no usable GPU is found, instead of running on the CPU")

    launcher = parser.add_argument_group("launcher (webui.sh / launch.py)")
    launcher.add_argument("--skip-install", action="store_true", default=S,
                          help="check the installed packages against the lock but do not install anything")
    launcher.add_argument("--torch-index-url", default=S, metavar="URL",
                          help="install torch from this index (also TORCH_INDEX_URL), e.g. "
                               "https://download.pytorch.org/whl/cu130; an installed torch of another build "
                               "(+cpu, +cu130, +rocm7.2) is reinstalled from it")
    launcher.add_argument("--doctor", action="store_true", default=S, help="print the environment report and exit")
    launcher.add_argument("--selftest", action="store_true", default=S,
                          help="generate one image with a tiny built-in model on the chosen device, then exit")


def add_generate_flags(parser: argparse.ArgumentParser) -> None:
    gen = parser.add_argument_group("generate")
    gen.add_argument("--model", required=True, help="model name, A1111 title 'name [hash]', file name or short hash")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--style", dest="styles", action="append", metavar="NAME",
                     help="apply this style (from styles.csv in the data dir or a --models-dir root; Fooocus "
                          "style files too) to the prompts; repeat it for several, applied in order")
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--sampler", default="Euler a", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M'")
    gen.add_argument("--schedule", default="Automatic", help="schedule type: Automatic, Karras, Exponential, ...")
    gen.add_argument("--cfg-scale", type=float, default=7.0)
    gen.add_argument("--width", type=int, default=512)
    gen.add_argument("--height", type=int, default=512)
    gen.add_argument("--seed", type=int, default=-1, help="-1 for random; image i of a batch gets seed + i")
    gen.add_argument("--batch-size", type=int, default=1)
    gen.add_argument("--batch-count", type=int, default=1)
    gen.add_argument("--vae", default="Automatic", metavar="NAME",
                     help="A1111's sd_vae: Automatic (a VAE named after the model, else its own), None (the model's "
                          "own), or a VAE's file name in models/VAE")
    gen.add_argument("--out", type=Path, required=True, metavar="DIR",
                     help="outputs folder (txt2img/DATE/ or img2img/DATE/ inside)")
    add_img2img_flags(parser)
    add_hires_flags(parser)


def build_parser() -> FlagParser:
    parser = FlagParser(prog="sdlocal", allow_abbrev=False, description=__doc__.split("\n\n")[0],
                        epilog="Precedence: defaults < <data dir>/settings.json < SDLOCAL_* environment < flags.")
    add_settings_flags(parser)
    subs = parser.add_subparsers(dest="command", metavar="{serve,doctor,generate,selftest,cluster}",
                                 parser_class=FlagParser)
    for name, text in (("serve", "start the web UI (the default)"), ("doctor", "print the environment report"),
                       ("selftest", "generate one image with a tiny built-in model")):
        sub = subs.add_parser(name, help=text, allow_abbrev=False, description=text)
        add_settings_flags(sub)
    gen = subs.add_parser("generate", help="make images without the UI", allow_abbrev=False,
                          description="Make images with a model and save them with their parameters.")
    add_settings_flags(gen)
    add_generate_flags(gen)
    add_cluster_parser(subs, FlagParser)
    return parser


GENERATE_KEYS = ("model", "prompt", "negative_prompt", "steps", "sampler", "schedule", "cfg_scale", "width",
                 "height", "seed", "batch_size", "batch_count", "vae")
LAUNCHER_KEYS = ("skip_install", "torch_index_url", "doctor", "selftest")


@dataclass
class Invocation:
    """What the command line asked for: which command, the merged settings, and the command's own values."""

    command: str
    settings: Settings
    options: dict[str, Any] = field(default_factory=dict)


def parse_command(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Invocation:
    """Parse flags into an :class:`Invocation`; bad flag values exit 2 with the message (argparse style)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        if "-h" not in argv and "--help" not in argv:
            argv = ["serve", *argv]
    parser = build_parser()
    values = vars(parser.parse_args(argv))
    command = values.pop("command", None) or "serve"
    options = {k: values.pop(k) for k in (*GENERATE_KEYS, "styles", "out", "init_image", "mask", *SOURCE_KEYS,
                                          "hires", *HIRES_KEYS) if k in values}
    launcher = {k: values.pop(k) for k in LAUNCHER_KEYS if k in values}
    if launcher.get("doctor"):
        command = "doctor"
    elif launcher.get("selftest"):
        command = "selftest"
    if values.get("nowebui"):
        values.setdefault("api", True)
    try:
        settings = resolve(values, env)
    except SettingsError as exc:
        parser.exit(2, f"sdlocal: error: {exc}\n")
    options.update(launcher)
    return Invocation(command, settings, options)


def parse_args(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """The settings for ``argv`` (defaults < settings file < environment < flags)."""
    return parse_command(argv, env).settings


# ----- commands ----------------------------------------------------------------------------------------------------

def run_doctor(settings: Settings, out: Any = None) -> int:
    from sdlocal import doctor

    out = out or sys.stdout
    report = doctor.diagnose(settings)
    print(report.text(), file=out, flush=True)
    return 1 if report.failed else 0


def run_serve(settings: Settings, launched: bool = False) -> int:
    """Quick checks, then the server; the checks that import torch run once the page is up.

    Importing torch costs seconds that the page should not wait for; a failure found then still stops sdlocal
    with the full report and exit code 1.
    """
    from sdlocal import doctor

    for note in settings.notes:
        print(f"[sdlocal] note: {note}", flush=True)
    quick = doctor.diagnose(settings, parts=(doctor.QUICK,))
    if quick.failed:
        print(quick.text(), flush=True)
        return 1
    for finding in quick.findings:
        if finding.level != doctor.OK:
            print(finding.line(), flush=True)
    doctor.apply(quick, settings)
    message = settings.secure_sharing()
    if message:
        print(message, flush=True)

    def torch_checks() -> int:
        report = doctor.diagnose(settings, check_port_free=False, parts=(doctor.TORCH,))
        if report.failed:
            print(report.text(), flush=True)
            print("[sdlocal] stopping: fix the failure above and start again", flush=True)
            return 1
        for finding in report.findings:
            if finding.level != doctor.OK:
                print(finding.line(), flush=True)
        if report.device == "cpu":
            print("\n" + "!" * 78 + "\n!! No usable NVIDIA GPU: sdlocal runs on the CPU. Expect minutes per image.\n"
                  + "!" * 78 + "\n", flush=True)
        return 0

    from sdlocal.server import serve

    print(f"[sdlocal] starting on {settings.url} (data: {settings.data_dir})", flush=True)
    return serve(settings, after_start=torch_checks) or 0


def run_generate(settings: Settings, options: dict[str, Any], out: Any = None, err: Any = None) -> int:
    """Generate and save; a bad value prints the RequestError message and returns 2."""
    out = out or sys.stdout
    err = err or sys.stderr
    if settings.offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sdlocal.engine.request import EngineError, GenerationRequest
    from sdlocal.styles import StyleLibrary, apply_styles

    fields = {k: options[k] for k in GENERATE_KEYS if k in options}
    try:
        if options.get("styles"):
            library = StyleLibrary(settings.data_dir, settings.models_dirs)
            fields["prompt"], fields["negative_prompt"] = apply_styles(
                fields.get("prompt", ""), fields.get("negative_prompt", ""), options["styles"], library)
        hires = hires_part(options)
        # Without an init image, --denoising-strength is hires fix's strength (A1111 shares the one control).
        img2img = {k: v for k, v in options.items() if not (hires is not None and k == "denoising_strength")}
        request = GenerationRequest.build(**fields, emphasis=settings.emphasis, source=image_source(img2img),
                                          hires=hires)
    except RequestError as exc:
        print(f"sdlocal generate: {_message(exc)}", file=err)
        return 2
    from sdlocal.engine import Engine
    from sdlocal.outputs import OutputStore

    engine = Engine(settings.to_engine_config())
    try:
        result = engine.generate(request)
    except RequestError as exc:
        print(f"sdlocal generate: {_message(exc)}", file=err)
        return 2
    except EngineError as exc:
        print(f"sdlocal generate: {exc}", file=err)
        return 1
    store = OutputStore(options["out"])
    for image in result.images:
        path = store.save(image.image, image.infotext, image.seed, kind=request.output_kind)
        print(f"{path}\tseed {image.seed}", file=out)
    for warning in result.warnings:
        print(f"warning: {warning}", file=err)
    return 0


def _message(exc: RequestError) -> str:
    """The error with the flag that sets its field (img2img's or hires fix's)."""
    flag = hires_flag(exc.field)
    return f"{exc} (set with {flag})" if flag else flag_message(exc)


def run_selftest(settings: Settings, out: Any = None) -> int:
    """Build a tiny random-weight pipeline and make one 64x64 image with the configured device/precision/attention."""
    out = out or sys.stdout
    started = time.perf_counter()
    try:
        result = selftest(settings)
    except Exception as exc:  # noqa: BLE001 - the failure is the report
        print(f"selftest FAILED after {time.perf_counter() - started:.1f} s: {type(exc).__name__}: {exc}", file=out)
        return 1
    print(f"selftest {'passed' if result['ok'] else 'FAILED'}: {result['detail']} "
          f"(build {result['build_s']:.2f} s, generate {result['generate_s']:.2f} s)", file=out)
    return 0 if result["ok"] else 1


def selftest(settings: Settings) -> dict[str, Any]:
    """One image from ``build_tiny_pipeline`` on the chosen runtime; ok unless it fails or is not finite."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from sdlocal.engine.devices import resolve_runtime
    from sdlocal.engine.synthetic import build_tiny_pipeline

    runtime = resolve_runtime(settings.to_engine_config())
    t0 = time.perf_counter()
    pipe = build_tiny_pipeline(family="sd1", seed=0)
    pipe.to(runtime.device, runtime.dtype)
    pipe.vae.to(dtype=runtime.vae_dtype)
    if runtime.attention == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
    build_s = time.perf_counter() - t0
    generator = torch.Generator(device="cpu").manual_seed(1)
    t1 = time.perf_counter()
    image = pipe("a photo of a cat", num_inference_steps=4, height=64, width=64, guidance_scale=7.0,
                 generator=generator, output_type="np").images[0]
    if runtime.device == "cuda":
        torch.cuda.synchronize()
    generate_s = time.perf_counter() - t1
    finite = bool(np.isfinite(image).all())
    detail = (f"{runtime.device} ({runtime.capabilities.device_name}), {runtime.precision}, "
              f"attention {runtime.attention}, 64x64, 4 steps")
    if not finite:
        detail += ": the image has NaN values (try --no-half-vae or --precision fp32)"
    return {"ok": finite, "detail": detail, "build_s": build_s, "generate_s": generate_s}


def main(argv: list[str] | None = None, launched: bool = False) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["cluster"]:  # its own flags, no Settings: the cluster reads cluster.yaml
        from sdlocal.cluster.cli import run_cluster

        return run_cluster(build_parser().parse_args(args))
    invocation = parse_command(argv)
    settings = invocation.settings
    if invocation.command == "doctor":
        return run_doctor(settings)
    if invocation.command == "selftest":
        return run_selftest(settings)
    if invocation.command == "generate":
        return run_generate(settings, invocation.options)
    return run_serve(settings, launched)


if __name__ == "__main__":
    sys.exit(main())
