"""The v2 infer route as a plain ASGI handler, in front of FastAPI's router.

Inference is the one route on the hot path. Through FastAPI, routing, dependency
resolution and its middleware stack took more of the event loop than the request's own
work (measured with py-spy at concurrency 32: about 55% of the event loop against 21% for
decoding, batching and encoding). This handler answers `POST /v2/models/{name}/infer`
(and its versioned form) itself, inside the API-key check and the request middleware
(request id, body limit, metrics, access log), with the same decode → infer → encode as
the FastAPI route, which stays for the OpenAPI document. Every other request goes on to
FastAPI."""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import BadRequest, NotFound, ServingError, client_input
from server.model import ServedModel
from server.model_repository import ModelRepository
from server.protocol import binary, v2_codec
from server.protocol.compression import inflate
from server.protocol.v2_codec import MODEL_VERSION, EncodedResponse
from server.settings import ServerSettings

INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
HEADER_LENGTH = binary.HEADER_LENGTH.lower().encode()


@dataclass(frozen=True)
class RouteTemplate:
    """What the request middleware labels its metrics with (as a FastAPI route has it)."""

    path: str


INFER = RouteTemplate("/v2/models/{name}/infer")
INFER_VERSION = RouteTemplate("/v2/models/{name}/versions/{version}/infer")


def served_model(repository: ModelRepository, name: str, version: str | None) -> ServedModel:
    model = repository.get(name)
    if version is not None and version != MODEL_VERSION:
        raise NotFound(f"model {name!r} has no version {version!r} (versions: {MODEL_VERSION})")
    return model


async def infer(
    repository: ModelRepository,
    settings: ServerSettings,
    name: str,
    version: str | None,
    body: bytes,
    header_length: str | None,
    content_encoding: str | None,
) -> EncodedResponse:
    """Decode (one guarded step: any failure is a 4xx), infer, encode."""
    model = served_model(repository, name, version)
    spec, rows = model.input_spec(), settings.max_request_batch
    with client_input("request"):
        body = inflate(body, content_encoding, settings.max_body_bytes)
        envelope = v2_codec.read_envelope(body, header_length, spec, rows)
        parsed = v2_codec.decode_inputs(envelope, spec, rows)
    answer = await model.predict(parsed.x, parsed.m)
    return v2_codec.encode_answer(name, parsed, answer)


class V2InferFastPath:
    def __init__(self, app: ASGIApp, repository: ModelRepository, settings: ServerSettings) -> None:
        self.app = app
        self.repository = repository
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            INFER_PATH.fullmatch(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        name, version = match["name"], match["version"]
        scope["route"] = INFER if version is None else INFER_VERSION
        try:
            chunks = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client has gone: nobody to answer
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            headers = dict(scope["headers"])
            length = headers.get(HEADER_LENGTH)
            if length is not None and [k for k, _ in scope["headers"]].count(HEADER_LENGTH) > 1:
                # A proxy may read the first, the dict keeps the last: refuse, never guess.
                raise BadRequest(f"{binary.HEADER_LENGTH} is given more than once; send it once")
            encoding = headers.get(b"content-encoding")
            encoded = await infer(
                self.repository,
                self.settings,
                name,
                version,
                b"".join(chunks),
                None if length is None else length.decode("latin-1"),
                None if encoding is None else encoding.decode("latin-1"),
            )
        except ServingError as exc:
            await exc.response()(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", encoded.media_type.encode()),
                    (b"content-length", str(len(encoded.body)).encode()),
                    *((k.lower().encode(), v.encode()) for k, v in encoded.headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": encoded.body})
