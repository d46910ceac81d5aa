"""The contract between the trainer and the server: what a model folder holds and how it
is written and read (manifest, atomic files), the ensemble arithmetic, image decoding and
the training report's schema. Needs neither torch nor an HTTP stack; `trainer` and
`server` both import it and never each other."""
