# One image for tempay's three processes; docker-compose.yml picks the role by command:
# `tempay worker`, `tempay webhook`, `tempay sandbox`. Healthchecks are per service in the
# compose file (the worker serves no HTTP, so the image carries none).
#
# Two stages. `build` installs the runtime dependencies exactly as requirements/runtime.txt
# locks them (every file checked against its hash) into the venv /opt/tempay, builds
# tempay's wheel with the locked build backend and installs it there without dependencies.
# The final stage copies only that venv: no build backend, no pip in the venv, no compiler,
# no test tools and no `temporal` CLI (the dev extra, for `tempay dev` only).
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY requirements ./requirements
# --require-hashes: a file whose hash is not in the lock is refused; --no-deps: nothing the
# lock does not name is installed; --only-binary: wheels only, so no package's build code runs
# (pip's "secure installs"; every pin has wheels for amd64 and arm64). The venv has no pip of
# its own: this stage's pip installs into it (--python).
RUN python -m venv --without-pip /opt/tempay \
    && pip --python /opt/tempay/bin/python install --require-hashes --no-deps \
        --only-binary :all: -r requirements/runtime.txt
# The build backend (pyproject.toml's [build-system]), locked too; it stays in this stage.
RUN pip install --require-hashes --no-deps --only-binary :all: -r requirements/build.txt

COPY pyproject.toml README.md ./
COPY tempay ./tempay
COPY book ./book
COPY commands ./commands
COPY transactions ./transactions
COPY workflows ./workflows
COPY activities ./activities
COPY webhook ./webhook
COPY providers ./providers
# tempay itself, with --no-deps: its dependencies are the locked ones above.
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && pip --python /opt/tempay/bin/python install --no-deps /wheels/tempay-*.whl

FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/tempay/bin:$PATH

RUN groupadd --system --gid 10001 tempay \
    && useradd --system --uid 10001 --gid tempay --home-dir /app --shell /usr/sbin/nologin tempay

# Owned by root and read-only to the processes: the code cannot be changed by what it runs.
COPY --from=build /opt/tempay /opt/tempay

WORKDIR /app
COPY worker.py ./

# The data dir: the sandbox's database and notification key pair. docker-compose.yml mounts
# a named volume here; an empty volume takes this directory's owner, so tempay can write.
RUN mkdir -p /data && chown tempay:tempay /data
ENV TEMPAY_DATA_DIR=/data

USER tempay
EXPOSE 8000 8001 8002
CMD ["tempay", "worker"]
