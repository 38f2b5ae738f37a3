# syntax=docker/dockerfile:1
# rds-csi: one image for the controller (`rds-csi controller ...`) and the
# node plugin (`rds-csi node ...`); the Helm chart in charts/rds-csi picks
# the subcommand.
#
#   docker build --build-arg RDS_CSI_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t rds-csi:0.1.0 .
#
# Without a registry, hack/image.sh builds the same image from Debian
# packages (see docs/release.md).
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
# fsck and grow; util-linux: blkid; mount, kmod: for people debugging in the
# container. hack/image.sh installs the same list without a registry, and
# hack/image-check.sh compares the two (packages, binary, user, entrypoint).
# No /etc/nvme/hostnqn or hostid is baked in (nvme-cli's postinst writes
# them): the node plugin reads the host's own, mounted from the host, and
# refuses to start without a unique one. The exact package versions go to
# /usr/share/rds-csi/packages.txt, as in hack/image.sh's image.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates nvme-cli e2fsprogs xfsprogs util-linux mount kmod \
 && rm -rf /var/lib/apt/lists/* /etc/nvme/hostnqn /etc/nvme/hostid \
 && echo 'rds-csi:x:65532:65532:rds-csi:/nonexistent:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'rds-csi:x:65532:' >>/etc/group \
 && mkdir -p /usr/share/rds-csi \
 && dpkg-query -W -f='${Package}\t${Version}\t${Architecture}\n' | LC_ALL=C sort >/usr/share/rds-csi/packages.txt
COPY --from=builder /out/rds-csi /usr/local/bin/rds-csi
# The controller runs as this user (the chart's securityContext says the
# same); the node plugin needs root and a privileged container: the chart
# sets runAsUser: 0 for it.
USER 65532:65532
ENTRYPOINT ["rds-csi"]
CMD ["--help"]
