"""sdlocal's Cog runner: typed inputs with Cog's constraints, and a hand-off to ``sdlocal.hosted``.

Cog 0.23's current SDK is used: ``BaseRunner`` with ``run()`` (and ``run:`` in cog.yaml). ``BasePredictor`` and
``predict()`` are still accepted but warn as deprecated, and coglet 0.23.1 serves ``run()`` here (the server test
in tests/deploy/test_cog_server.py runs this file in the real server).

This file stays thin on purpose: the work (settings, the starter download, the request rules, the PNGs) is in
``sdlocal/hosted.py``, which never imports cog and is tested without it. The constraints below are literals because
``cog build`` reads this file's source statically to make its schema; tests/deploy/test_cog_config.py checks that
they match sdlocal's own limits and sampler names, and the request rules still check everything else (a width
that is not a multiple of 8, a sampler that cannot use a schedule type), with a message naming the input.
"""

from __future__ import annotations

from cog import BaseRunner, Input, Path

from sdlocal.hosted import Hosted, TextToImage, setup

SAMPLERS = ["Euler a", "Euler", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DDIM", "PLMS",
            "UniPC", "LCM"]
SCHEDULE_TYPES = ["Automatic", "Karras", "Exponential", "SGM Uniform"]


class Runner(BaseRunner):
    """Text to image with sdlocal's engine; setup loads the model once per container."""

    hosted: Hosted

    def setup(self) -> None:
        """Load the mounted models folder's first model (SDLOCAL_MODELS_DIRS), else download the starter model."""
        self.hosted = setup()

    def run(
        self,
        prompt: str = Input(description="What to draw (A1111 prompt syntax: (word:1.2), <lora:name:0.8>)."),
        negative_prompt: str = Input(default="", description="What to avoid."),
        width: int = Input(default=512, ge=64, le=4096, description="Width in pixels, a multiple of 8."),
        height: int = Input(default=512, ge=64, le=4096, description="Height in pixels, a multiple of 8."),
        steps: int = Input(default=20, ge=1, le=150, description="Sampling steps."),
        cfg_scale: float = Input(default=7.0, ge=0.0, le=30.0, description="How closely to follow the prompt."),
        sampler: str = Input(default="Euler a", choices=SAMPLERS, description="Sampler, by its A1111 name."),
        schedule_type: str = Input(default="Automatic", choices=SCHEDULE_TYPES, description="Noise schedule."),
        seed: int = Input(default=-1, ge=-1, le=4294967295, description="Seed; -1 picks one at random."),
        num_outputs: int = Input(default=1, ge=1, le=16, description="Images in the batch (seeds seed, seed+1...)."),
        model: str = Input(default="", description="Checkpoint by name from the models folder; empty = the first."),
    ) -> list[Path]:
        """One batch of images as PNG files, each with its A1111 ``parameters`` text."""
        inputs = TextToImage(prompt=prompt, negative_prompt=negative_prompt, width=width, height=height, steps=steps,
                             cfg_scale=cfg_scale, sampler=sampler, schedule_type=schedule_type, seed=seed,
                             num_outputs=num_outputs, model=model)
        return [Path(path) for path in self.hosted.generate(inputs)]
