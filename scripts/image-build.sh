#!/usr/bin/env bash
# Builds the fleet's image without a container engine, as the Dockerfile describes it, and runs
# each binary's `--help` inside it:
#   1. the Dockerfile's BINARIES, built with `cargo build --release --locked` (or taken from
#      $BINARIES_FROM, a directory holding them already);
#   2. a Debian root filesystem (`mmdebstrap --variant=minbase`, the Dockerfile's runtime
#      release) with the runtime stage's packages and its user (its groupadd and useradd);
#   3. the binaries in /usr/local/bin, each run with `--help` as uid 10001 in a chroot;
#   4. an OCI image layout (one layer, the Dockerfile's labels, user, env, port and command) in
#      $STATE_DIR/image/oci, for `skopeo copy oci:… docker://…` or any OCI tool to publish;
#   5. that layout read back, when the tools are there (Debian: apt-get install skopeo umoci):
#      `skopeo inspect` of its config, and `umoci unpack` of its layer (digests checked), each
#      binary's --help run again in the unpacked root filesystem.
# Not part of `make test` (a release build and a Debian download take minutes): `make image`.
# Differences from `docker build`: the root filesystem is Debian's minbase from the archive at
# build time, not the digest-pinned debian:bookworm-slim.
# Needs root (mmdebstrap, chroot) and mmdebstrap (Debian: apt-get install mmdebstrap).
#
# Usage: scripts/image-build.sh    (VERSION, REVISION, SOURCE: the labels' build arguments)
source "$(dirname "$0")/lib.sh"

DOCKERFILE=$REPO_ROOT/Dockerfile
WORK=$STATE_DIR/image
ROOTFS=$WORK/rootfs
OCI=$WORK/oci

command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is needed (Debian: apt-get install mmdebstrap)"
((EUID == 0)) || die "run as root: mmdebstrap and chroot need it"

# The facts the Dockerfile holds, read from it.
read -r -a binaries <<<"$(sed -n 's/^ARG BINARIES="\(.*\)"$/\1/p' "$DOCKERFILE")"
release=$(sed -n 's/^ARG RUNTIME_IMAGE=debian:\([a-z]*\)-slim@.*/\1/p' "$DOCKERFILE")
packages=$(grep 'apt-get install' "$DOCKERFILE" | tail -n1 | sed 's/.*--no-install-recommends //; s/ *\\$//' | tr ' ' ',')
mapfile -t user_commands < <(sed -n 's/^ *&& \(groupadd .*\|useradd .*\)$/\1/p' "$DOCKERFILE" | sed 's/ *\\$//')
((${#binaries[@]} > 0 && ${#user_commands[@]} == 2)) && [[ -n $release && -n $packages ]] \
    || die "could not read BINARIES, the runtime release, its packages or its user from the Dockerfile"

# 1. The binaries.
if [[ -n ${BINARIES_FROM:-} ]]; then
    bin_dir=$BINARIES_FROM
else
    say "cargo build --release ${binaries[*]}"
    (cd "$REPO_ROOT" && cargo build --release --locked "${binaries[@]/#/--bin=}")
    bin_dir=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release
fi

# 2. The root filesystem.
say "mmdebstrap $release minbase + $packages"
rm -rf "$ROOTFS" "$OCI"
mkdir -p "$WORK"
mmdebstrap --quiet --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    "$release" "$ROOTFS" || die "mmdebstrap failed"
for command in "${user_commands[@]}"; do
    read -r -a words <<<"$command"
    chroot "$ROOTFS" "${words[@]}" || die "in the root filesystem: $command failed"
done

# 3. The binaries inside, each answering --help as the chart runs them (uid 10001).
for bin in "${binaries[@]}"; do
    install -m 0755 "$bin_dir/$bin" "$ROOTFS/usr/local/bin/$bin" || die "no binary $bin_dir/$bin"
done
for bin in "${binaries[@]}"; do
    chroot --userspec=10001:10001 "$ROOTFS" "/usr/local/bin/$bin" --help >"$WORK/$bin.help" 2>&1 \
        || { sed 's/^/    /' "$WORK/$bin.help" >&2; die "$bin --help failed inside the image"; }
    echo "ok   $bin --help: $(head -n1 "$WORK/$bin.help")"
done

# 4. The OCI image layout.
python3 - "$ROOTFS" "$OCI" "$DOCKERFILE" "$release" <<'PYEOF'
import gzip, hashlib, io, json, os, pathlib, re, sys, tarfile

rootfs, oci, dockerfile = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
# The runtime stage: what follows its FROM.
text = dockerfile.read_text().split("FROM ${RUNTIME_IMAGE}", 1)[1]
args = {k: a or b for k, a, b in re.findall(r'^ARG (\w+)=(?:"([^"]*)"|(\S*))$', text, re.M)}
args.update({k: os.environ[k] for k in ("VERSION", "REVISION", "SOURCE") if os.environ.get(k)})
label_block = text[text.index("LABEL "):].split("\n\n", 1)[0]
labels = {k: re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), v)
          for k, v in re.findall(r'([\w.]+)="([^"]*)"', label_block)}
# Built from Debian's minbase here, not from the Dockerfile's base image.
labels["org.opencontainers.image.base.name"] = f"debian {sys.argv[4]} minbase (mmdebstrap)"
env = re.findall(r"^ENV (\w+)=(\S+)$", text, re.M)
port = re.search(r"^EXPOSE (\d+)$", text, re.M).group(1)
cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))

blobs = oci / "blobs" / "sha256"
blobs.mkdir(parents=True)
def blob(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return digest

raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for path in sorted(rootfs.rglob("*")):
        name = str(path.relative_to(rootfs))
        if name.startswith(("proc/", "sys/", "dev/")):
            continue
        info = tar.gettarinfo(str(path), arcname=name)
        info.mtime = 0
        tar.addfile(info, path.open("rb") if info.isfile() else None)
layer = raw.getvalue()
diff_id = hashlib.sha256(layer).hexdigest()
gz = gzip.compress(layer, compresslevel=6, mtime=0)
layer_digest = blob(gz)
config = {
    "architecture": "amd64", "os": "linux",
    "config": {"User": "10001:10001", "Env": [f"{k}={v}" for k, v in env]
               + ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "ExposedPorts": {f"{port}/tcp": {}}, "Cmd": cmd, "Labels": labels},
    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
}
config_bytes = json.dumps(config, sort_keys=True).encode()
config_digest = blob(config_bytes)
manifest = {
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": f"sha256:{config_digest}", "size": len(config_bytes)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": f"sha256:{layer_digest}", "size": len(gz)}],
    "annotations": labels,
}
manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
manifest_digest = blob(manifest_bytes)
(oci / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
(oci / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{manifest_digest}",
    "size": len(manifest_bytes),
    "annotations": {"org.opencontainers.image.ref.name": labels.get("org.opencontainers.image.version", "dev")}}]}))
print(f"ok   OCI layout {oci}: manifest sha256:{manifest_digest}, layer {len(gz) // 1048576} MiB")
PYEOF

# 5. The layout read back as a registry or a runtime would.
if command -v skopeo >/dev/null 2>&1 && command -v umoci >/dev/null 2>&1; then
    ref=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])' "$OCI/index.json")
    skopeo inspect --config "oci:$OCI:$ref" >"$WORK/config.json" || die "skopeo cannot read oci:$OCI:$ref"
    echo "ok   skopeo inspect oci:$OCI:$ref: user $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["User"])' "$WORK/config.json")"
    rm -rf "$WORK/unpacked"
    umoci unpack --rootless --image "$OCI:$ref" "$WORK/unpacked" >/dev/null || die "umoci cannot unpack oci:$OCI:$ref"
    for bin in "${binaries[@]}"; do
        chroot --userspec=10001:10001 "$WORK/unpacked/rootfs" "/usr/local/bin/$bin" --help >/dev/null 2>&1 \
            || die "$bin --help failed in the unpacked image"
    done
    echo "ok   umoci unpack: layer digests verified; every binary's --help runs in the unpacked image"
    rm -rf "$WORK/unpacked"
else
    warn "skopeo or umoci missing: the OCI layout was not read back (Debian: apt-get install skopeo umoci)"
fi
