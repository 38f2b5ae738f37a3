# syntax=docker/dockerfile:1
# rds-csi: one image for the controller (`rds-csi controller ...`) and the
# node plugin (`rds-csi node ...`); the Helm chart in charts/rds-csi picks
# the subcommand.
#
#   docker build --build-arg RDS_CSI_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t rds-csi:0.1.0 .
#
# No system protoc is needed (the build uses protoc-bin-vendored).

# Any Rust at or above the workspace rust-version; "1" is the newest 1.x.
ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# .git is not copied in: the commit comes from the build argument.
ARG RDS_CSI_GIT_COMMIT=unknown
ENV RDS_CSI_GIT_COMMIT=${RDS_CSI_GIT_COMMIT}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin rds-csi \
 && install -D -m 0755 target/release/rds-csi /out/rds-csi

FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim
# nvme-cli: connect/disconnect over NVMe/TCP; e2fsprogs, xfsprogs: mkfs,
# fsck and grow; util-linux: mount, umount, blkid; kmod: load nvme-tcp.
# No /etc/nvme/hostnqn is baked in: the node plugin reads the host's own,
# mounted from the host, and refuses to start without a unique one.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates nvme-cli e2fsprogs xfsprogs util-linux mount kmod \
 && rm -rf /var/lib/apt/lists/* /etc/nvme/hostnqn /etc/nvme/hostid
COPY --from=builder /out/rds-csi /usr/local/bin/rds-csi
# The node plugin needs root (and a privileged container); the chart runs
# the controller as UID 65532 through its pod securityContext.
ENTRYPOINT ["rds-csi"]
CMD ["--help"]
