# A small image of a Sluice agent. Build from the repository's root:
#   docker build -f contrib/docker/agent.Dockerfile -t sluice-agent .
#   docker run -d -e SLUICE_CONTROLLER=ci.example.com:7443 -e SLUICE_JOIN_TOKEN=... \
#     -v agent-data:/var/lib/sluice-agent sluice-agent
# Settings come from SLUICE_AGENT_* variables or a file mounted at
# /etc/sluice/agent.toml with SLUICE_AGENT_CONFIG (docs/install.md).

# The build stage: the agent embeds the digests of the built-in plugins,
# which are compiled to wasm32-wasip2 by a build script.
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sluice-agent --bin sluice-agent \
 && install -m 0755 target/release/sluice-agent /usr/local/bin/sluice-agent

# The runtime: the binary, CA roots for plugins' HTTPS, and git, which the
# git plugin runs as a granted program; a user of its own, never root.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/sluice-agent --create-home --shell /usr/sbin/nologin sluice-agent \
 && chmod 0700 /var/lib/sluice-agent
COPY --from=build /usr/local/bin/sluice-agent /usr/local/bin/sluice-agent
USER sluice-agent
VOLUME /var/lib/sluice-agent
# The agent listens on nothing: it connects out to the controller's fleet port (UDP).
ENV SLUICE_AGENT_DATA_DIR=/var/lib/sluice-agent
ENTRYPOINT ["/usr/local/bin/sluice-agent"]
