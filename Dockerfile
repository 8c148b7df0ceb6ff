# Multi-stage build of hopper: flight-server and mop (runner and trainer).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# libtorch from the PyPI torch wheel (CPU build), as scripts/libtorch.sh does everywhere.
RUN LIBTORCH="$(HOPPER_CACHE=/opt/hopper scripts/libtorch.sh)" && \
    LIBTORCH="$LIBTORCH" cargo build --release -p flight-server -p mop && \
    mkdir -p /out && cp target/release/flight-server target/release/mop /out/ && \
    ln -s "$LIBTORCH" /opt/hopper/libtorch

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libgomp1 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/hopper /opt/hopper
COPY --from=build /out/ /usr/local/bin/
ENV LD_LIBRARY_PATH=/opt/hopper/libtorch/lib
EXPOSE 50051 7000
