# snapens images. The default target is the torch-free serving image:
#   docker build -t snapens-server:gpu .                        onnxruntime-gpu, CUDA and cuDNN from PyPI
#   docker build --build-arg ORT=cpu -t snapens-server:cpu .    plain onnxruntime
#   docker build --target trainer -t snapens-trainer .          torch (CPU wheels by default)
# Both run as uid 10001 with the model repository at /models (mount a volume there).
# No `# syntax=` line: the engine's built-in Dockerfile frontend builds this file (BuildKit,
# Docker 20.10+; `RUN --mount` is the only BuildKit feature used), so nothing is pulled from a
# registry for the build itself.

FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 snapens \
    && useradd --system --uid 10001 --gid snapens --create-home --home-dir /home/snapens \
        --shell /usr/sbin/nologin snapens \
    && install --directory --owner 10001 --group 10001 /models

# The project as a wheel (a normal, non-editable install below, package data included).
FROM base AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY snapens ./snapens
COPY server ./server
COPY trainer ./trainer
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# python -m trainer, writing into /models: `docker run -v models:/models snapens-trainer`.
FROM base AS trainer
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
# DL3013: the project's own wheel with extras; the extras' version bounds live in pyproject.toml.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    set -- /wheels/snapens-*.whl \
    && pip install --no-cache-dir "$1[train,cpu]"
USER 10001:10001
WORKDIR /home/snapens
ENTRYPOINT ["python", "-m", "trainer", "--repository", "/models"]
CMD ["--dataset", "digits", "--skip-if-exists"]

# python -m server on /models; the last stage, so the default target.
FROM base AS server
ARG ORT=gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# With ORT=gpu the CUDA and cuDNN libraries come as pip packages under site-packages/nvidia;
# onnxruntime's CUDA provider finds them through the linker cache, which ldconfig fills here.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    set -- /wheels/snapens-*.whl \
    && case "${ORT}" in \
        gpu) pip install --no-cache-dir "$1[serve,gpu]" "onnxruntime-gpu[cuda,cudnn]>=1.20" ;; \
        cpu) pip install --no-cache-dir "$1[serve,cpu]" ;; \
        *) echo "ORT must be gpu or cpu, not ${ORT}" >&2; exit 1 ;; \
    esac \
    && nvidia="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/nvidia" \
    && if [ -d "${nvidia}" ]; then \
        find "${nvidia}" -name 'lib*.so*' -printf '%h\n' | sort -u > /etc/ld.so.conf.d/nvidia-pip.conf \
        && ldconfig; \
    fi
ENV SNAPENS_REPOSITORY=/models \
    SNAPENS_HOST=0.0.0.0 \
    SNAPENS_PORT=8000 \
    SNAPENS_PROVIDERS=auto \
    SNAPENS_LOG_FORMAT=json \
    SNAPENS_LOG_LEVEL=info \
    SNAPENS_GRACEFUL_SHUTDOWN_S=10
USER 10001:10001
WORKDIR /home/snapens
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "server.healthcheck"]
# Exec form: python is PID 1 and gets SIGTERM itself; the server drains in-flight requests
# for SNAPENS_GRACEFUL_SHUTDOWN_S, so give `docker stop` / Kubernetes more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "server"]
