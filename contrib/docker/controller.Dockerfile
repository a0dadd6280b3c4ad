# A small image of the Sluice controller. Build from the repository's root:
#   docker build -f contrib/docker/controller.Dockerfile -t sluice .
#   docker run -d -p 7400:7400 -p 7443:7443/udp -v sluice-data:/var/lib/sluice sluice
# Settings come from SLUICE_* variables (-e SLUICE_API_NAME=ci.example.com)
# or a file mounted at /etc/sluice/controller.toml (docs/install.md).

# The build stage: the built-in plugins are compiled to wasm32-wasip2 by the
# controller's build script, so the target is added here.
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sluice --bin sluice \
 && install -m 0755 target/release/sluice /usr/local/bin/sluice

# The runtime: the binary, CA roots for outgoing HTTPS (notifications,
# plugins) and git for git sources; a user of its own, never root.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/sluice --create-home --shell /usr/sbin/nologin sluice \
 && chmod 0700 /var/lib/sluice \
 && mkdir -p /etc/sluice \
 && printf 'api = "0.0.0.0:7400"\nfleet = "0.0.0.0:7443"\n' > /etc/sluice/controller.toml
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
USER sluice
VOLUME /var/lib/sluice
# The API (TCP) and the fleet (UDP, QUIC).
EXPOSE 7400/tcp 7443/udp
# The API binds every address in a container; its certificate (from the
# controller's CA) names the addresses given with SLUICE_API_NAME. The
# listen addresses are in the image's config file, not in SLUICE_API, which
# is also the CLI's URL variable (`docker exec ... sluice pipeline list`);
# mount another /etc/sluice/controller.toml, or set variables, to change them.
ENV SLUICE_DATA_DIR=/var/lib/sluice \
    SLUICE_CONTROLLER_CONFIG=/etc/sluice/controller.toml
ENTRYPOINT ["/usr/local/bin/sluice", "controller"]
