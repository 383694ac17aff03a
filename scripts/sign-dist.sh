#!/usr/bin/env bash
# Writes SHA256SUMS and the release manifest latest.json for the release files in DIR (archives .tar.gz
# and .zip, .deb packages), and signs both with minisign when a key is configured.
#
# Usage: scripts/sign-dist.sh DIR VERSION
# Environment:
#   MINISIGN_KEY_FILE   minisign secret key; without it nothing is signed (a ::notice:: says so)
#   MINISIGN_PASSWORD   its password, if it has one
#   MINISIGN_PUB_FILE   its public key, copied into DIR [default: recreated from the secret key]
#   MINISIGN_PUB_NAME   the public key's name in DIR [default: streamr-node-release.pub]
#   DIST_REPOSITORY     owner/name on GitHub for the manifest's links [default: $GITHUB_REPOSITORY]
#   DIST_BASE_URL       where the files are downloaded from [default: that repository's release vVERSION]
#   DIST_NOTES_URL      the release notes [default: that repository's release page for vVERSION]
#   SOURCE_DATE_EPOCH   the release date [default: today]
set -euo pipefail

DIR=${1:?usage: sign-dist.sh DIR VERSION}
VERSION=${2:?usage: sign-dist.sh DIR VERSION}
REPOSITORY=${DIST_REPOSITORY:-${GITHUB_REPOSITORY:-streamr-node/streamr-node}}
BASE_URL=${DIST_BASE_URL:-https://github.com/$REPOSITORY/releases/download/v$VERSION}
NOTES_URL=${DIST_NOTES_URL:-https://github.com/$REPOSITORY/releases/tag/v$VERSION}
DATE=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%d)

die() {
    echo "sign-dist.sh: $*" >&2
    exit 1
}
# The manifest is written with printf: its strings must need no JSON escaping.
for url in "$BASE_URL" "$NOTES_URL"; do
    case "$url" in
    https://*[\"\\[:space:][:cntrl:]]*) die "no quotes, backslashes or spaces in URLs: $url" ;;
    https://?*) ;;
    *) die "not an https URL: $url" ;;
    esac
done
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "not a semantic version: $VERSION"

cd "$DIR"
shopt -s nullglob
ARTIFACTS=(streamr-node-*.tar.gz streamr-node-*.zip streamr-node_*.deb)
[ ${#ARTIFACTS[@]} -gt 0 ] || die "no release files (streamr-node-*.tar.gz, *.zip, streamr-node_*.deb) in $DIR"

sha256sum "${ARTIFACTS[@]}" >SHA256SUMS

# os and arch as Rust's std::env::consts name them: what a running node compares with its own.
describe() { # file -> "os arch kind"
    local f=$1 triple arch
    case "$f" in
    *.deb)
        arch=${f##*_}
        arch=${arch%.deb}
        case "$arch" in amd64) arch=x86_64 ;; arm64) arch=aarch64 ;; esac
        echo "linux $arch deb"
        return
        ;;
    *.tar.gz) triple=${f#streamr-node-"$VERSION"-}; triple=${triple%.tar.gz} ;;
    *.zip) triple=${f#streamr-node-"$VERSION"-}; triple=${triple%.zip} ;;
    esac
    case "$triple" in
    *-linux-*) echo "linux ${triple%%-*} archive" ;;
    *-apple-darwin) echo "macos ${triple%%-*} archive" ;;
    *-windows-*) echo "windows ${triple%%-*} archive" ;;
    *) die "cannot tell the platform of $f (expected streamr-node-$VERSION-TARGET.tar.gz or .zip)" ;;
    esac
}

{
    printf '{\n  "version": "%s",\n  "date": "%s",\n  "notes_url": "%s",\n  "artifacts": [' \
        "$VERSION" "$DATE" "$NOTES_URL"
    sep=
    for f in "${ARTIFACTS[@]}"; do
        read -r os arch kind <<<"$(describe "$f")"
        sha=$(sha256sum "$f" | cut -d' ' -f1)
        printf '%s\n    {\n      "name": "%s",\n      "os": "%s",\n      "arch": "%s",\n      "kind": "%s",\n      "url": "%s/%s",\n      "sha256": "%s"\n    }' \
            "$sep" "$f" "$os" "$arch" "$kind" "$BASE_URL" "$f" "$sha"
        sep=,
    done
    printf '\n  ]\n}\n'
} >latest.json

if [ -z "${MINISIGN_KEY_FILE:-}" ]; then
    echo "::notice::MINISIGN_KEY_FILE is not set: SHA256SUMS and latest.json are not signed"
    exit 0
fi
command -v minisign >/dev/null || die "minisign is missing (Debian: apt-get install minisign)"
sign() { # file trusted-comment
    if [ -n "${MINISIGN_PASSWORD:-}" ]; then
        printf '%s\n' "$MINISIGN_PASSWORD" | minisign -S -s "$MINISIGN_KEY_FILE" -m "$1" -t "$2" >/dev/null
    else
        minisign -S -s "$MINISIGN_KEY_FILE" -m "$1" -t "$2" </dev/null >/dev/null
    fi
    [ -s "$1.minisig" ] || die "minisign did not sign $1 (wrong password?)"
}
sign SHA256SUMS "streamr-node $VERSION SHA256SUMS"
sign latest.json "streamr-node $VERSION release manifest"

PUB=${MINISIGN_PUB_NAME:-streamr-node-release.pub}
if [ -n "${MINISIGN_PUB_FILE:-}" ]; then
    cp "$MINISIGN_PUB_FILE" "$PUB"
elif [ -n "${MINISIGN_PASSWORD:-}" ]; then
    printf '%s\n' "$MINISIGN_PASSWORD" | minisign -R -s "$MINISIGN_KEY_FILE" -p "$PUB" >/dev/null
else
    minisign -R -s "$MINISIGN_KEY_FILE" -p "$PUB" </dev/null >/dev/null
fi
# What was signed must verify with the key that is published next to it.
minisign -Vm SHA256SUMS -p "$PUB" -q
minisign -Vm latest.json -p "$PUB" -q
