# syntax=docker/dockerfile:1
# metadata-relay: HTTP/WebSocket on PORT (4001), STUN/TURN on TURN_PORT (3478 udp+tcp),
# SQLite under /data. Built for linux/amd64 and linux/arm64 by .github/workflows/ci.yml.
#
# Stage 1 (builder): uv installs exactly the locked dependencies (uv.lock, --locked fails
# if it is out of date with pyproject.toml), then the project itself, into /app/.venv.
# Stage 2 (runtime): the same Python base, the venv only, non-root uid 1000.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
# A C compiler for the TURN forwarder extension (hatch_build.py); the runtime needs only libc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first (cached while only the source changes).
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra redis --no-install-project
# Then the project, installed as a regular (non-editable) package.
COPY README.md hatch_build.py ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra redis --no-editable

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="metadata-relay" \
      org.opencontainers.image.description="TMDB/TVDB caching proxy, device pairing relay and STUN/TURN server" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later"
RUN groupadd --system --gid 1000 relay \
    && useradd --system --uid 1000 --gid 1000 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin relay \
    && mkdir -p /data \
    && chown 1000:1000 /data \
    && chmod 0750 /data
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=4001 \
    TURN_PORT=3478 \
    SQLITE_DB_PATH=/data/metadata_relay.db
USER 1000:1000
WORKDIR /data
VOLUME ["/data"]
# 4001/tcp HTTP + WebSockets; 3478 STUN/TURN. TURN relay ports (TURN_MIN_PORT..TURN_MAX_PORT,
# default 49152-49252/udp) are used on the host network in Kubernetes; with `docker run`
# publish them too (-p 49152-49252:49152-49252/udp).
EXPOSE 4001 3478/udp 3478/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '4001') + '/health', timeout=4)"]
ENTRYPOINT ["metadata-relay"]
