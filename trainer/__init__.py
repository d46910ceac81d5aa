"""The torch side: data, networks, schedules, the training loop, snapshots and their
ONNX export, written into a model repository that `server` reads."""
