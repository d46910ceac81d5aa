"""The contract between the trainer and the server: what a model folder holds and how it
is written and read (manifest, atomic files), the ensemble arithmetic, image decoding and
the training report's schema. Needs neither torch nor an HTTP stack; `trainer` and
`server` both import it and never each other.

Importing it also turns onnxruntime's telemetry off, unless the environment already says
otherwise: onnxruntime's Linux wheels (seen in 1.31 and 1.32) send usage events to Microsoft by
default and keep a device identifier and an event cache under ~/.cache/Microsoft.
`ORT_DISABLE_TELEMETRY=1` stops all of it, but only when set before onnxruntime is
imported, so `server` and `trainer` import this package first. `ORT_DISABLE_TELEMETRY=0`
in the environment turns it back on."""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
