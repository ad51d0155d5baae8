# syntax=docker/dockerfile:1
# KeyGrid's image: kg-server and the kg CLI, built with cargo and run on debian-slim as a
# non-root user (the default target), and an nginx image with the built web view (target
# nginx). docker-compose.yml runs three nodes behind that nginx.

# --- build ---------------------------------------------------------------------------------------
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the registry and target/ between builds, so a rebuild after a
# source change compiles only KeyGrid's own crates.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kg-server -p kg-cli \
    && mkdir -p /out && cp target/release/kg-server target/release/kg /out/

# --- the web view, served by the nginx target below ---------------------------------------------
FROM node:20-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM nginx:1.25 AS nginx
COPY nginx/keygrid.conf /etc/nginx/conf.d/default.conf
COPY --from=web /web/dist /usr/share/nginx/html

# --- run (the default target) -------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/keygrid --create-home keygrid
COPY --from=build /out/kg-server /out/kg /usr/local/bin/
USER keygrid
WORKDIR /var/lib/keygrid
ENV KG_LISTEN=0.0.0.0:8000
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${KG_LISTEN##*:}/api/ready" >/dev/null || exit 1
ENTRYPOINT ["kg-server"]
