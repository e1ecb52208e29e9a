#!/usr/bin/env bash
# Tries scripts/install.sh and `scripts/infra.sh up` on a plain Debian or Ubuntu release, in a
# chroot:
#   1. a minimal root filesystem of RELEASE (`mmdebstrap --variant=minbase`: no Redis, MariaDB,
#      Java, Node.js, Python or compiler) in $STATE_DIR/distro-test/RELEASE;
#   2. the working tree's files copied into it (/src), with a policy-rc.d so that packages do not
#      start services in the chroot (as in a container; infra.sh starts them);
#   3. scripts/install.sh run inside it, with the network (Debian's archive, PyPI, npm);
#   4. `scripts/infra.sh up` inside it in network and process namespaces of its own (its own
#      loopback and process list, so its Redis, MariaDB, broker… do not meet this machine's),
#      every service answering, then everything it started stopped.
# What cannot come from the package registries is given from this machine, read-only, and said
# so: the Rust toolchain (~/.rustup, ~/.cargo: rustup.rs is not reachable from here), the
# cargo-nextest binary (else a cargo install of minutes) and the Meilisearch server
# ($MEILISEARCH_BIN or the one `make up` uses), so those steps are exercised as "present"; and
# this machine's local certificate authorities (/usr/local/share/ca-certificates: a proxy's,
# which HTTPS to PyPI and npm may need here), with the variables pointing pip and npm at the
# system's bundle.
#
# Ubuntu's archive key comes from its own archive over HTTPS, as the ubuntu-keyring package
# (Debian 12 ships none), checked against UBUNTU_KEYRING_SHA256.
#
# Usage: scripts/distro-test.sh bookworm|trixie|jammy|noble
#        (root; needs mmdebstrap; KEEP=1 keeps the tree)
# Not part of `make test`: it downloads a few hundred MB of packages.
source "$(dirname "$0")/lib.sh"

release=${1:-}
[[ -n $release ]] || die "usage: $0 RELEASE (Debian: bookworm, trixie; Ubuntu: jammy, noble)"
((EUID == 0)) || die "run as root: mmdebstrap, chroot and unshare need it"
command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is needed (Debian: apt-get install mmdebstrap)"
meili=$(meilisearch_bin) || die "$MEILISEARCH_MISSING"
root=$STATE_DIR/distro-test/$release
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}

mounted=()
cleanup() {
    local m
    for ((m = ${#mounted[@]} - 1; m >= 0; m--)); do umount -l "${mounted[m]}" 2>/dev/null || true; done
    [[ -n ${KEEP:-} ]] || rm -rf "$root"
}
trap cleanup EXIT
bind() { # bind SOURCE TARGET [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2" && mounted+=("$2")
    [[ ${3:-} != ro ]] || mount -o remount,bind,ro "$2"
}

# The archive as a plain Ubuntu machine has it (http: apt checks the signatures; the minbase
# tree has no CA certificates for https until install.sh installs them).
UBUNTU_ARCHIVE=http://archive.ubuntu.com/ubuntu
UBUNTU_KEYRING_DEB=ubuntu-keyring_2023.11.28.1_all.deb
UBUNTU_KEYRING_SHA256=36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8

# ubuntu_keyring: the path of Ubuntu's archive keyring, fetched and checked once.
ubuntu_keyring() {
    local dir=$STATE_DIR/distro-test/ubuntu-keyring
    if [[ ! -s $dir/usr/share/keyrings/ubuntu-archive-keyring.gpg ]]; then
        mkdir -p "$dir"
        curl -fsSL -o "$dir/$UBUNTU_KEYRING_DEB" "${UBUNTU_ARCHIVE/http:/https:}/pool/main/u/ubuntu-keyring/$UBUNTU_KEYRING_DEB" \
            || die "fetching $UBUNTU_KEYRING_DEB from $UBUNTU_ARCHIVE failed"
        echo "$UBUNTU_KEYRING_SHA256  $dir/$UBUNTU_KEYRING_DEB" | sha256sum --check --quiet \
            || die "$UBUNTU_KEYRING_DEB: sha256 is not UBUNTU_KEYRING_SHA256"
        dpkg-deb -x "$dir/$UBUNTU_KEYRING_DEB" "$dir"
    fi
    echo "$dir/usr/share/keyrings/ubuntu-archive-keyring.gpg"
}

say "$release: mmdebstrap minbase"
rm -rf "$root"; mkdir -p "$(dirname "$root")"
case $release in
    jammy | noble)
        # apt is "important", not "required", in Ubuntu's archive: minbase leaves it out, and
        # every Ubuntu machine has it.
        mmdebstrap --quiet --variant=minbase --components=main,universe --include=apt \
            --keyring="$(ubuntu_keyring)" "$release" "$root" "$UBUNTU_ARCHIVE" ;;
    *) mmdebstrap --quiet --variant=minbase "$release" "$root" ;;
esac || die "mmdebstrap $release failed"
say "$release: $(sed -n 's/^PRETTY_NAME="\(.*\)"/\1/p' "$root/etc/os-release"); $(chroot "$root" dpkg -l | grep -c '^ii') packages"

mkdir -p "$root/src" "$root/shared/bin" "$root/usr/local/bin"
(cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$root/src"
install -m 0755 "$meili" "$root/shared/bin/meilisearch"
install -m 0755 "$(command -v cargo-nextest)" "$root/usr/local/bin/cargo-nextest"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 0755 "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
bind /proc "$root/proc"
bind /dev "$root/dev"
bind /sys "$root/sys"
bind "$rustup_home" "$root/root/.rustup" ro
bind "$cargo_home" "$root/root/.cargo" ro

bundle=/etc/ssl/certs/ca-certificates.crt
in_root() { chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PIP_CERT=$bundle REQUESTS_CA_BUNDLE=$bundle SSL_CERT_FILE=$bundle npm_config_cafile=$bundle \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

say "$release: scripts/install.sh"
in_root bash /src/scripts/install.sh || die "$release: scripts/install.sh failed"
say "$release: scripts/install.sh again (must change nothing)"
second=$(in_root bash /src/scripts/install.sh 2>&1) || die "$release: the second scripts/install.sh failed: $second"
[[ -z $second ]] || die "$release: the second scripts/install.sh did something: $second"

say "$release: scripts/infra.sh up, in network and process namespaces of its own"
unshare --net --pid --mount --fork --mount-proc="$root/proc" chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -c '
    ip link set lo up
    bash /src/scripts/infra.sh up; rc=$?
    bash /src/scripts/infra.sh down >/dev/null
    redis-cli shutdown nosave >/dev/null 2>&1
    mariadb-admin -uroot shutdown >/dev/null 2>&1
    exit $rc' || die "$release: scripts/infra.sh up failed"
versions=$(in_root bash -c 'echo "redis $(redis-server --version | sed -n "s/.*v=\([^ ]*\).*/\1/p"),
 $(mariadb --version | sed -n "s/.* \([0-9.]*\)-MariaDB.*/MariaDB \1/p"), java $(java -version 2>&1 | sed -n "s/.*version \"\([^\"]*\)\".*/\1/p"),
 node $(node --version), python $(python3 --version | cut -d" " -f2), $(rustc --version | cut -d" " -f1-2)"' | tr -d '\n')
echo "ok   $release: install.sh installed what was missing, a second run did nothing, infra.sh up started every service ($versions)"
