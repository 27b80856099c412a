# syntax=docker/dockerfile:1
# `segflow serve` in a container; build and run commands in docs/deploy.md.
#
# Two stages: `builder` installs segflow and its pinned stack into a virtualenv (compilers stay
# there), `runtime` copies only that virtualenv onto a slim Python image and runs as a non-root
# user. torch comes from TORCH_INDEX_URL: the default (PyPI) gives the CUDA build on x86-64; the
# CPU-wheel index (https://download.pytorch.org/whl/cpu) gives an image several GB smaller, and
# `segflow serve` runs on the CPU either way.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV VIRTUAL_ENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# A compiler for any dependency without a wheel for the target platform; it never reaches the
# runtime stage. DL3008 (pin apt package versions) is ignored: Debian drops superseded versions
# from its mirrors after security updates, so pins break later builds; the base image tag
# already fixes the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv "$VIRTUAL_ENV"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# With a CPU-wheel index, torch resolves to "2.14.1+cpu": it satisfies pyproject's
# "torch==2.14.1" and ranks above PyPI's build of the same version, so pip takes it.
RUN "$VIRTUAL_ENV/bin/pip" install --extra-index-url "$TORCH_INDEX_URL" . \
    && "$VIRTUAL_ENV/bin/segflow" --help > /dev/null

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG SEGFLOW_UID=10001
# SEGFLOW_HOST: the service binds loopback by default; in a container it must listen on every
# interface. SEGFLOW_MODEL: mount or COPY the model there, or pass a path as the argument.
# Every other setting is a SEGFLOW_* variable too (docs/serving.md); the API key must come
# from the environment (SEGFLOW_API_KEY), never from this file.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SEGFLOW_HOST=0.0.0.0 \
    SEGFLOW_PORT=8000 \
    SEGFLOW_MODEL=/models/model.onnx
RUN groupadd --system --gid "$SEGFLOW_UID" segflow \
    && useradd --system --uid "$SEGFLOW_UID" --gid segflow --create-home --home-dir /home/segflow segflow \
    && mkdir /models
COPY --from=builder /opt/venv /opt/venv
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER ${SEGFLOW_UID}:${SEGFLOW_UID}
WORKDIR /home/segflow
EXPOSE 8000
# The image has no curl: Python's urllib asks /healthz; any error or non-2xx answer exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SEGFLOW_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["segflow", "serve"]
