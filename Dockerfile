# syntax=docker/dockerfile:1
# chatbot-server: a release build in a Rust image, then only the binary in a
# small distroless runtime image (glibc, no shell, no package manager) that
# runs as an unprivileged user.
#   docker build -t chatbot-server .
#   docker run -p 3001:3001 -e JWT_SECRET=... chatbot-server
# deploy/compose.yaml runs three of them behind nginx with Redis and MongoDB.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit), so a
# code change does not rebuild every dependency.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin chatbot-server \
    && install -D -m 0755 target/release/chatbot-server /out/chatbot-server \
    && mkdir -p /out/data

# Debian 12's glibc, as the build stage; the ":nonroot" variant runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/chatbot-server /usr/local/bin/chatbot-server
# Where the embedded SQLite user store lives when MONGODB_URI is unset.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
ENV SQLITE_PATH=/data/chatbot.db \
    APP_ENV=production \
    PORT=3001
USER 65532:65532
EXPOSE 3001
VOLUME ["/data"]
# The binary checks itself (GET /health on PORT): the image needs no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/chatbot-server", "healthcheck"]
# Logs go to stdout; SIGTERM drains running answers for SHUTDOWN_TIMEOUT.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chatbot-server"]
