# Container image with kdfed-hub, kdfed-spoke, kdfed-console and kdfed.
#   docker build -t kdfed:latest .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins -p kdfed-hub -p kdfed-console -p kdfed-cli
# The spoke runs on every member: its footprint counts there, so it is the `small` profile's
# build (opt-level "s", fat LTO: 13 MB idle instead of 18; docs/director.md#idle-cost).
RUN cargo build --profile small --locked --bin kdfed-spoke -p kdfed-spoke

FROM debian:bookworm-slim
# The director runs setup steps inside members through exec; nothing else is needed here.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kdfed-hub /src/target/small/kdfed-spoke /src/target/release/kdfed-console \
     /src/target/release/kdfed /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kdfed-hub"]
