"""The engine: models, devices, samplers, generation. Importing this package is cheap (no torch, no diffusers);
torch is imported inside the methods that need it, so the UI can serve its page before the model loads."""

from sdlocal.engine.config import EngineConfig
from sdlocal.engine.devices import Capabilities
from sdlocal.engine.engine import Engine
from sdlocal.engine.models import ModelEntry
from sdlocal.engine.request import (
    EngineError,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ModelNotFoundError,
    Progress,
    RequestError,
)

__all__ = [
    "Capabilities",
    "Engine",
    "EngineConfig",
    "EngineError",
    "GeneratedImage",
    "GenerationRequest",
    "GenerationResult",
    "ModelEntry",
    "ModelNotFoundError",
    "Progress",
    "RequestError",
]
