# syntax=docker/dockerfile:1
# KeyGrid's image: kg-server and the kg CLI, run on Debian 12 as a non-root user (the default
# target), and an nginx image with the built web view (target nginx). docker-compose.yml runs
# three nodes behind that nginx.
#
# The base images are build arguments. By default they are the ordinary public ones, as any
# Docker user expects; scripts/compose-images.sh builds stand-ins from Debian's packages on a
# debootstrap'd root file system, for a machine that reaches no container registry.
#
# Where the binaries come from (KG_BINARIES):
#   build     (default) compiled here with cargo in the Rust image. It needs nothing but
#             Docker, and the binaries match the image's Debian.
#   prebuilt  packed from deploy/docker/bin/ (kg-server and kg, built on the host with
#             `cargo build --release -p kg-server -p kg-cli`). Without a registry there is no
#             Rust image to compile in, and Debian's own rustc is too old for KeyGrid, so the
#             local images pack what the host built; the host must run Debian 12 (glibc 2.36)
#             or older for them to run here.
ARG RUST_IMAGE=rust:1-slim-bookworm
ARG NODE_IMAGE=node:20-slim
ARG NGINX_IMAGE=nginx:1.25
ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG KG_BINARIES=build

# --- binaries, compiled (KG_BINARIES=build) ------------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the registry and target/ between builds, so a rebuild after a
# source change compiles only KeyGrid's own crates.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kg-server -p kg-cli \
    && mkdir -p /out && cp target/release/kg-server target/release/kg /out/

# --- binaries, built on the host (KG_BINARIES=prebuilt) -----------------------------------------
FROM scratch AS prebuilt
COPY deploy/docker/bin/kg-server deploy/docker/bin/kg /out/

FROM ${KG_BINARIES} AS binaries

# --- the web view, served by the nginx target below ---------------------------------------------
FROM ${NODE_IMAGE} AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM ${NGINX_IMAGE} AS nginx
COPY nginx/keygrid.conf /etc/nginx/conf.d/default.conf
COPY --from=web /web/dist /usr/share/nginx/html

# --- run (the default target) -------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/keygrid --create-home keygrid
COPY --from=binaries /out/kg-server /out/kg /usr/local/bin/
USER keygrid
WORKDIR /var/lib/keygrid
ENV KG_LISTEN=0.0.0.0:8000
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${KG_LISTEN##*:}/api/ready" >/dev/null || exit 1
ENTRYPOINT ["kg-server"]
