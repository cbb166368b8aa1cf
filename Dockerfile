# syntax=docker/dockerfile:1
# mindvideo-relay: one image for every role and for `relay migrate`.
#   docker build -t mindvideo-relay .
#   docker run --rm -e RELAY_DATABASE_URL=... mindvideo-relay migrate
#   docker run --rm -p 8080:8080 -e RELAY_DATABASE_URL=... mindvideo-relay serve --roles api

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# ---- builder: a venv holding the project and its dependencies -------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv

WORKDIR /src
# The exact dependency versions of requirements.lock, each checked against its hash
# (`make lock` writes it from pyproject.toml); a layer of its own, so code changes reuse it.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
# Only the inputs of the distribution: its metadata, the package, migrations.
COPY pyproject.toml README.md ./
COPY relay ./relay
COPY sql ./sql
# The project itself, non-editable and without resolving anything more (hatchling backend);
# the venv's bytecode is compiled here, as the runtime root filesystem is read-only.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---- runtime: no compilers, no pip cache, non-root -------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="mindvideo-relay" \
      org.opencontainers.image.description="Relay between internal services and MindVideo's task API, with signed webhooks"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin relay

COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
EXPOSE 8080

ENTRYPOINT ["relay"]
CMD ["serve"]
