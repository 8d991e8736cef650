# The gridops app image; docker-compose.yml runs it against postgis/postgis.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm postgresql-client-15 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts/vendor-frontend.sh scripts/
RUN npm ci --no-audit --no-fund --loglevel=error && scripts/vendor-frontend.sh \
    && rm -rf node_modules
COPY . .
RUN pip install -e . && useradd --system --home /app gridops && mkdir -p /app/var \
    && chown gridops /app/var
USER gridops
EXPOSE 8000
