"""HTTP protocols: the Open Inference Protocol (KServe v2, as Triton speaks it) and a
friendly KServe-v1-style JSON API."""
