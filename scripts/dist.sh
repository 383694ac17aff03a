#!/usr/bin/env bash
# Builds the Linux release files of streamr-node into target/dist/ (or --out DIR):
#   streamr-node-VERSION-TARGET.tar.gz   the binary, README.md and install.md
#   streamr-node_DEBVERSION_ARCH.deb     the binary and a systemd unit (packaging/deb/)
#   SHA256SUMS, latest.json               checksums and the release manifest (update notices)
#   *.minisig, *.pub                      their minisign signatures and the public key that checks them
#
# The release key comes from MINISIGN_KEY_FILE (+ MINISIGN_PASSWORD if it has one); its public key is
# packaging/release-key.pub (or MINISIGN_PUB_FILE), which the binary is built to trust for update notices.
# Without a key, a test key is made once in target/dist-test-key/ and used, and its public key is written
# as streamr-node-test.pub: good for checking the pipeline, not for publishing.
#
# The .deb is made with dpkg-deb from Cargo.toml's metadata (docs/release.md says why not cargo-deb).
#
# Usage: scripts/dist.sh [--target TRIPLE] [--profile release|dev|NAME] [--binary PATH] [--out DIR]
#                        [--package-only] [--print-version]
#   --target TRIPLE   Rust target to build and package [default: this machine's]
#   --profile NAME    cargo profile to build [default: release]
#   --binary PATH     package this already built binary (of --target) instead of building
#   --out DIR         where the files go [default: $CARGO_TARGET_DIR/dist or target/dist]
#   --package-only    archive and .deb only: no SHA256SUMS, manifest or signatures (the release workflow
#                     signs all platforms' files together with scripts/sign-dist.sh)
#   --print-version   print the version (from Cargo.toml) and exit
# Environment: MINISIGN_KEY_FILE, MINISIGN_PASSWORD, MINISIGN_PUB_FILE (above); DIST_REPOSITORY
# (owner/name on GitHub, for the manifest's links) [default: $GITHUB_REPOSITORY]; SOURCE_DATE_EPOCH.
# Needs: bash, cargo, tar, gzip, dpkg-deb, sha256sum, minisign (Debian: dpkg coreutils minisign).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
HOST=$(rustc -vV | sed -n 's/^host: //p')
TARGET=$HOST
TARGET_GIVEN=0
PROFILE=release
BINARY=
OUT=$TARGET_DIR/dist
PACKAGE_ONLY=0
PRINT_VERSION=0
RELEASE_PUB=$ROOT/packaging/release-key.pub

die() {
    echo "dist.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
    --target) TARGET=${2:?--target needs a triple}; TARGET_GIVEN=1; shift 2 ;;
    --profile) PROFILE=${2:?--profile needs a name}; shift 2 ;;
    --binary) BINARY=${2:?--binary needs a path}; shift 2 ;;
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --package-only) PACKAGE_ONLY=1; shift ;;
    --print-version) PRINT_VERSION=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done

for tool in tar gzip dpkg-deb sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install dpkg coreutils tar gzip)"
done

# Version and description: Cargo.toml is the one source ([workspace.package] version, [package] description).
toml_value() { # section key
    awk -v section="[$1]" -v key="$2" '
        /^\[/ { in_section = ($0 == section) }
        in_section && $1 == key && $2 == "=" { sub(/^[^=]*= *"/, ""); sub(/" *$/, ""); print; exit }
    ' "$ROOT/Cargo.toml"
}
VERSION=$(toml_value workspace.package version)
DESCRIPTION=$(toml_value package description)
LICENSE=$(toml_value workspace.package license)
[ -n "$VERSION" ] || die "cannot read the version from Cargo.toml"
if [ "$PRINT_VERSION" = 1 ]; then
    echo "$VERSION"
    exit 0
fi

case "$TARGET" in
x86_64-*linux*) DEB_ARCH=amd64 ;;
aarch64-*linux*) DEB_ARCH=arm64 ;;
*) die "dist.sh packages Linux targets (x86_64, aarch64); the release workflow packages $TARGET" ;;
esac
# Debian sorts ~ before anything: 0.2.0~rc.1 comes before 0.2.0, as semver's 0.2.0-rc.1 does.
DEB_VERSION="${VERSION//-/\~}-1"

# The keys, before the build: a binary built here trusts the key that signs its manifest.
TEST_KEY_DIR=$TARGET_DIR/dist-test-key
if [ "$PACKAGE_ONLY" = 0 ]; then
    command -v minisign >/dev/null || die "minisign is missing (Debian: apt-get install minisign)"
    if [ -z "${MINISIGN_KEY_FILE:-}" ]; then
        if [ ! -f "$TEST_KEY_DIR/test.key" ]; then
            mkdir -p "$TEST_KEY_DIR"
            minisign -G -W -f -p "$TEST_KEY_DIR/test.pub" -s "$TEST_KEY_DIR/test.key" >/dev/null
        fi
        echo "dist.sh: no MINISIGN_KEY_FILE: signing with the test key in $TEST_KEY_DIR (not for publishing)" >&2
        export MINISIGN_KEY_FILE=$TEST_KEY_DIR/test.key MINISIGN_PUB_FILE=$TEST_KEY_DIR/test.pub
        export MINISIGN_PUB_NAME=streamr-node-test.pub
        unset MINISIGN_PASSWORD
    elif [ -z "${MINISIGN_PUB_FILE:-}" ] && [ -f "$RELEASE_PUB" ]; then
        export MINISIGN_PUB_FILE=$RELEASE_PUB
    fi
fi
PUB_FOR_BUILD=${MINISIGN_PUB_FILE:-}
[ -z "$PUB_FOR_BUILD" ] && [ -f "$RELEASE_PUB" ] && PUB_FOR_BUILD=$RELEASE_PUB
if [ -z "${STREAMR_RELEASE_PUBKEY:-}" ] && [ -n "$PUB_FOR_BUILD" ]; then
    STREAMR_RELEASE_PUBKEY=$(sed -n 2p "$PUB_FOR_BUILD")
    export STREAMR_RELEASE_PUBKEY
fi

if [ -z "$BINARY" ]; then
    args=(build --locked -p streamr-node --profile "$PROFILE")
    profile_dir=$PROFILE
    [ "$PROFILE" = dev ] && profile_dir=debug
    if [ "$TARGET_GIVEN" = 1 ] && [ "$TARGET" != "$HOST" ]; then
        args+=(--target "$TARGET")
        BINARY=$TARGET_DIR/$TARGET/$profile_dir/streamr-node
    else
        # No --target for this machine's own: cargo reuses the ordinary build.
        BINARY=$TARGET_DIR/$profile_dir/streamr-node
    fi
    (cd "$ROOT" && cargo "${args[@]}")
fi
[ -x "$BINARY" ] || die "no executable at $BINARY"

# A binary that runs here must be the version it is packaged as.
if [ "${TARGET%%-*}" = "$(uname -m)" ]; then
    got=$("$BINARY" --version) || die "$BINARY --version failed"
    [ "$got" = "streamr-node $VERSION" ] || die "$BINARY says \"$got\", Cargo.toml says $VERSION: rebuild it"
fi

# Only our own files are replaced in OUT: it may be a folder with other things in it.
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/streamr-node-*.tar.gz "$OUT"/streamr-node_*.deb "$OUT"/SHA256SUMS* "$OUT"/latest.json* \
    "$OUT"/streamr-node*.pub
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}

install_binary() { # destination
    # Release builds are stripped already; a dev build shrinks from ~300 MB to ~45 MB.
    if [ "${TARGET%%-*}" = "$(uname -m)" ] && command -v strip >/dev/null; then
        strip -o "$1" "$BINARY"
    else
        cp "$BINARY" "$1"
    fi
    chmod 0755 "$1"
}

# The archive.
NAME=streamr-node-$VERSION-$TARGET
mkdir -p "$STAGE/$NAME"
install_binary "$STAGE/$NAME/streamr-node"
cp "$ROOT/README.md" "$ROOT/docs/install.md" "$STAGE/$NAME/"
chmod 0644 "$STAGE/$NAME/README.md" "$STAGE/$NAME/install.md"
# gzip -6: -9 takes three times as long for 1% less.
tar -C "$STAGE" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" -cf - "$NAME" |
    gzip -6n >"$OUT/$NAME.tar.gz"

# The .deb.
DEB=$STAGE/deb
install -d "$DEB/DEBIAN" "$DEB/usr/bin" "$DEB/usr/lib/systemd/system" "$DEB/usr/share/doc/streamr-node"
install_binary "$DEB/usr/bin/streamr-node"
install -m 0644 "$ROOT/packaging/deb/streamr-node.service" "$DEB/usr/lib/systemd/system/"
install -m 0644 "$ROOT/README.md" "$ROOT/docs/install.md" "$DEB/usr/share/doc/streamr-node/"
cat >"$DEB/usr/share/doc/streamr-node/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: streamr-node

Files: *
License: $LICENSE
EOF
install -m 0755 "$ROOT/packaging/deb/postinst" "$ROOT/packaging/deb/prerm" "$ROOT/packaging/deb/postrm" "$DEB/DEBIAN/"
cat >"$DEB/DEBIAN/control" <<EOF
Package: streamr-node
Version: $DEB_VERSION
Architecture: $DEB_ARCH
Maintainer: ${DEB_MAINTAINER:-streamr-node developers <streamr-node@users.noreply.github.com>}
Installed-Size: $(du -sk --exclude=DEBIAN "$DEB" | cut -f1)
Section: net
Priority: optional
Homepage: https://github.com/${DIST_REPOSITORY:-${GITHUB_REPOSITORY:-streamr-node/streamr-node}}
Description: ${DESCRIPTION%%:*}
 ${DESCRIPTION}
 .
 Installs a system service (streamr-node.service) that starts at boot and keeps
 its identity, keys, settings (config.toml) and logs in /var/lib/streamr-node.
EOF
(cd "$DEB" && find usr -type f -print0 | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
find "$DEB" -exec touch -h -d "@$EPOCH" {} +
dpkg-deb --root-owner-group -Zgzip -z6 --build "$DEB" "$OUT/streamr-node_${DEB_VERSION}_$DEB_ARCH.deb" >/dev/null

if [ "$PACKAGE_ONLY" = 0 ]; then
    "$ROOT/scripts/sign-dist.sh" "$OUT" "$VERSION"
fi
echo "dist.sh: $OUT:" >&2
ls -l "$OUT" >&2
