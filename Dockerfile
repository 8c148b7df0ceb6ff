# hopper's image: the relocatable release (scripts/package.sh) unpacked in
# /opt/hopper — flight-server, mop (runner and trainer) and the libtorch
# mop finds through its rpath — on a slim Debian.
#   docker build -t hopper .                            # CPU libtorch
#   docker build --build-arg TORCH_FLAVOR=cuda -t hopper:cuda .   # CUDA libtorch (GPU hosts)
FROM rust:1.95-bookworm AS build
ARG TORCH_FLAVOR=cpu
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip g++ patchelf \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# libtorch from the PyPI torch wheel, as scripts/libtorch.sh provisions it
# everywhere; then the release build and the tarball.
RUN LIBTORCH="$(HOPPER_CACHE=/opt/libtorch HOPPER_TORCH_FLAVOR=$TORCH_FLAVOR scripts/libtorch.sh)" \
    LIBTORCH_BYPASS_VERSION_CHECK=1 scripts/package.sh --out /out > /out.path \
    && mkdir -p /opt/hopper && tar -xzf "$(cat /out.path)" -C /opt/hopper --strip-components=1

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin hopper \
    && install -d -o hopper -g hopper -m 0700 /keys && install -d -o hopper -g hopper /out
COPY --from=build /opt/hopper /opt/hopper
ENV PATH=/opt/hopper/bin:$PATH
# Named volumes mounted at /keys and /out start owned by hopper.
USER hopper
EXPOSE 50051 7000
