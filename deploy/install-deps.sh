#!/usr/bin/env bash
# Installs the Debian 12 packages Skein needs to build and test.
# Idempotent: packages already present are left alone by apt-get.
set -euo pipefail

packages=(
    build-essential cmake pkg-config git ca-certificates
    protobuf-c-compiler libprotobuf-c-dev
    liblmdb-dev lmdb-utils libxxhash-dev
    libcmocka-dev
    libnng-dev nng-utils
    libcivetweb-dev civetweb
    libjansson-dev uuid-dev
    libcurl4-openssl-dev curl
    # test scripts read JSON answers
    jq
    # deploy/docker-compose.yml is validated offline (no Docker engine here)
    docker-compose
    # tests/fault: network namespaces, partitions and loss, link checks
    iproute2 iptables nftables iputils-ping
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages present"
    exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
