# syntax=docker/dockerfile:1
# The finsentry image (worker, alerter, API). Build from the repository root:
#   docker compose build   (or: docker build -f docker/worker.Dockerfile -t finsentry:0.1.0 .)
# GPU: PyPI's torch wheels bring their CUDA libraries; the host's NVIDIA driver comes in
# through the NVIDIA container toolkit (compose reserves the device).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (the large, rarely changing layer), read from pyproject.toml, with the
# numeric stack pinned as the model card was measured (constraints.txt).
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt
COPY . .
RUN pip install --no-deps . && finsentry --help > /dev/null

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    FINSENTRY_MANAGE_SERVICES=false \
    FINSENTRY_STATE_DIR=/var/lib/finsentry \
    FINSENTRY_MODELS_DIR=/models
RUN groupadd --system --gid 10001 finsentry \
    && useradd --system --uid 10001 --gid finsentry --home-dir /var/lib/finsentry finsentry \
    && mkdir -p /var/lib/finsentry /models \
    && chown finsentry:finsentry /var/lib/finsentry
COPY --from=build /opt/venv /opt/venv
USER finsentry
WORKDIR /var/lib/finsentry
CMD ["finsentry", "worker"]
