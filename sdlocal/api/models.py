"""Request and response shapes of the AUTOMATIC1111-compatible API, with A1111's field names and defaults.

Clients written for A1111 send many fields sdlocal does not use (hires fix, scripts, face restoration...); the
request model ignores unknown fields and keeps the known-but-unused ones so ``parameters`` can echo them back
and ``info`` can say which settings were not applied. Defaults are A1111's API defaults (steps 50, Euler,
CFG 7, 512x512), not the UI's, because scripts rely on them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sdlocal.scripts import ScriptArg


class GenerationFields(BaseModel):
    """The fields A1111's txt2img and img2img share. Unknown fields are ignored, as A1111 does; NaN and Infinity
    are refused (422)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    sampler_index: str = "Euler"
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    send_images: bool = True
    save_images: bool = False
    force_task_id: str | None = None
    infotext: str | None = None


class Txt2ImgRequest(GenerationFields):
    """``POST /sdapi/v1/txt2img``: the shared fields plus hires fix, with A1111's names and API defaults (the
    strength ``denoising_strength`` 0.75 when not sent; ``hr_upscaler`` "Latent"; "Use same" sampler and
    schedule). ``hr_checkpoint_name`` is accepted and named in ``info.warnings``: the second pass uses the model."""

    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_checkpoint_name: str | None = None


class Img2ImgRequest(GenerationFields):
    """``POST /sdapi/v1/img2img`` with A1111's API defaults, which differ from its UI's: fill, "Only masked"
    (``inpaint_full_res``), padding 0. Images are base64 text, with or without a ``data:image/...`` prefix.

    ``resize_mode`` and ``inpainting_fill`` are A1111's indices; their names are accepted too. ``mask_blur``,
    when sent, sets both ``mask_blur_x`` and ``mask_blur_y``. The sampler-tuning and edit-model fields
    (``eta``, ``s_churn``, ``image_cfg_scale``, ``initial_noise_multiplier``...) are accepted so clients work
    unchanged, and named in ``info.warnings`` when they ask for something sdlocal does not do.
    """

    init_images: list[str] | None = None
    resize_mode: int | str = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = 4
    mask_round: bool = True
    inpainting_fill: int | str = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None


class Txt2ImgResponse(BaseModel):
    images: list[str] = Field(description="Raw base64 PNGs (no data: prefix), each with its `parameters` chunk")
    parameters: dict[str, Any]
    info: str = Field(description="A JSON string: seed, all_seeds, infotexts, sampler_name, sd_model_name, ...")


class Img2ImgResponse(Txt2ImgResponse):
    """As txt2img's; ``parameters`` holds ``init_images`` and ``mask`` only with ``include_init_images``."""


class PngInfoRequest(BaseModel):
    image: str = Field(description="A base64 image, with or without a data: URL prefix")


class PngInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class SdModel(BaseModel):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None = None


class Sampler(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class Scheduler(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False


class ProgressStateModel(BaseModel):
    skipped: bool
    interrupted: bool
    stopping_generation: bool = False
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressStateModel
    current_image: str | None = None
    textinfo: str | None = None
    current_task: str | None = None


class PromptStyle(BaseModel):
    """One entry of ``GET /sdapi/v1/prompt-styles``, in A1111's shape."""

    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class ErrorResponse(BaseModel):
    error: str
    detail: str
    errors: Any = None


class EmbeddingRecord(BaseModel):
    """One embedding as A1111 lists it (``shape`` is the total vector width, 2048 for SDXL), plus ``reason``:
    why a skipped one is not used (made for another model, a name clash, or a file that cannot be read: then
    ``shape`` and ``vectors`` are 0). "" for loaded ones."""

    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    shape: int
    vectors: int
    reason: str = ""


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingRecord] = Field(description="By trigger name: the ones the current model uses")
    skipped: dict[str, EmbeddingRecord] = Field(description="By trigger name: the others, each with its reason")


class LoraRecord(BaseModel):
    """One entry of ``GET /sdapi/v1/loras``: A1111's ``name``, ``alias``, ``path`` and ``metadata`` (the kohya
    training notes, JSON values parsed), then what sdlocal read from the file's tensors. A file that cannot be
    used is listed too, with ``reason`` saying why (then ``format`` is "" and ``family``/``rank`` are null)."""

    name: str = Field(description="The path below its LoRA folder without the suffix, as in <lora:name:1>")
    alias: str = Field(description="ss_output_name from the metadata, else the file's stem; <lora:alias:1> works too")
    path: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    format: str = Field(description='"lora", "locon", "loha", "lokr", "dora" or "peft"; "" when unsupported')
    family: str | None = Field(description='"sd1", "sd2" or "sdxl"; null when the file names no real family')
    rank: int | None = None
    trigger_words: list[str] = Field(default_factory=list, description="The most frequent training tags")
    preview: str | None = Field(default=None, description="The preview image beside the file, if any")
    reason: str = Field(default="", description='Why the file cannot be used; "" when it can')


class SdVae(BaseModel):
    """One VAE as A1111 lists it (``model_name`` is what ``sd_vae`` takes, ``filename`` its full path), plus
    sdlocal's ``family`` ("sd1" for SD 1.x/2.x, "sdxl", None: fits any) and ``reason`` (why it cannot be used,
    "" when it can)."""

    model_name: str
    filename: str
    family: str | None = None
    reason: str = ""


class ExtrasFields(BaseModel):
    """A1111's Extras fields and API defaults (``resize_mode`` 0 = "Scale by", 1 = "Scale to"). The face
    restoration fields are accepted so clients work unchanged; sdlocal has no face restorer, so a non-zero
    visibility is named in ``warnings``. Ranges are checked by the engine (422 naming the field)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    resize_mode: int | str = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasFields):
    image: str = Field(default="", description="A base64 image, with or without a data: URL prefix")


class FileData(BaseModel):
    data: str = Field(description="A base64 image, with or without a data: URL prefix")
    name: str = ""


class ExtrasBatchImagesRequest(ExtrasFields):
    imageList: list[FileData] = Field(default_factory=list)  # noqa: N815 - A1111's field name


class ExtrasSingleImageResponse(BaseModel):
    html_info: str = Field(description="The Postprocessing text as HTML, as A1111 sends it")
    image: str = Field(description="Raw base64 PNG with the source's `parameters` and a `postprocessing` chunk")
    warnings: list[str] = Field(default_factory=list, description="sdlocal's addition: what was not done")


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]
    warnings: list[str] = Field(default_factory=list)


class UpscalerRecord(BaseModel):
    """One entry of ``GET /sdapi/v1/upscalers`` in A1111's shape, plus ``architecture`` (read from the file)."""

    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None
    architecture: str = ""


class LatentUpscaleMode(BaseModel):
    name: str


class ScriptsList(BaseModel):
    """``GET /sdapi/v1/scripts``: the ``script_name`` values each route takes (A1111's lower-case names)."""

    txt2img: list[str]
    img2img: list[str]


class ScriptInfoRecord(BaseModel):
    """One entry of ``GET /sdapi/v1/script-info``: a script for txt2img or img2img, its ``args`` in
    ``script_args`` order. sdlocal has no always-on scripts (``alwayson_scripts`` is named in ``warnings``)."""

    name: str
    is_alwayson: bool = False
    is_img2img: bool
    args: list[ScriptArg] = Field(description="label, value (the default), minimum, maximum, step, choices")
