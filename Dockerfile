# syntax=docker/dockerfile:1
# One image for every depthflow service; the command selects it:
#   docker run depthflow sim | collector | features | strategy | executor | api | migrate
# Build: docker build -t depthflow .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: resolve the pinned dependencies into a virtualenv -------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (cached while only the code changes): constraints.txt pins every
# transitive package, pyproject.toml the direct ones.
COPY pyproject.toml constraints.txt README.md ./
COPY libs ./libs
COPY services ./services
RUN pip install -c constraints.txt . \
 && python -m compileall -q /opt/venv/lib

# ---- runtime: the virtualenv, a non-root user, nothing else --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="depthflow" \
      org.opencontainers.image.description="Live crypto order books to trading decisions over Kafka and PostgreSQL" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 depthflow \
 && useradd --system --uid 10001 --gid depthflow --home-dir /app --shell /usr/sbin/nologin depthflow
COPY --from=build /opt/venv /opt/venv
# the working directory is the service's own (faust keeps its data dir there)
RUN install -d -o 10001 -g 10001 /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=9100 \
    LOG_JSON=true
WORKDIR /app
USER 10001:10001
# 9100: /metrics /healthz /readyz of a worker service; 8000: the api; 8090: the simulator
EXPOSE 9100 8000 8090
# Liveness of a worker service on HTTP_PORT (compose overrides it for api and sim, whose
# health endpoint is on their own port). The slim image has no curl, so Python asks.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '9100'), timeout=4)"]
ENTRYPOINT ["depthflow"]
CMD ["--help"]
