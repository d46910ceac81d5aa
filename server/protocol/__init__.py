"""HTTP protocols: the Open Inference Protocol (KServe v2, as Triton speaks it) and a
friendly KServe-v1-style JSON API.

Per protocol, a codec turns bytes and JSON into the model's input batch and the answer
back into a response, with no HTTP in it (`v2_codec`, `v1_codec`; data models in
`v2_models`, `v1_models`), and thin routes decode, infer and encode (`v2_endpoints`,
`v1_endpoints`, and `demo_endpoints` for the demo page). Routes take what the app holds
as typed dependencies (`dependencies`). Shared pieces: `tensors` (a batch checked against
the model's input), `binary` (the binary tensor extension), `compression` (gzip and
deflate bodies) and `docs` (the OpenAPI document and its pages)."""
