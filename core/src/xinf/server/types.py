"""What the routes of every model type share: finding a running model that has the needed ability."""

from __future__ import annotations

from xinf.errors import InvalidRequest
from xinf.model import RunningModel
from xinf.server.state import State

#: a route's ability -> the words its 400 uses for models without it
ROUTES = {
    "rerank": "a rerank model (POST /v1/rerank)",
    "audio2text": "a speech-to-text model (POST /v1/audio/transcriptions)",
    "text2audio": "a text-to-speech model (POST /v1/audio/speech)",
    "text2image": "a text-to-image model (POST /v1/images/generations)",
}


def model_for(st: State, uid: str, ability: str) -> RunningModel:
    """The running model ``uid`` (404 if none), refused with a 400 when it lacks ``ability``."""
    model = st.manager.get(uid)
    if ability not in model.spec.abilities:
        raise InvalidRequest(
            f"model {uid!r} is not {ROUTES[ability]}; its abilities: {', '.join(model.spec.abilities)}",
            param="model",
        )
    return model
