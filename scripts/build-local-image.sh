#!/usr/bin/env bash
# Builds a small local image (default agentnodes/busybox:latest) from the host's static busybox,
# with `docker import`: no registry, no pull. Needs Debian's busybox-static.
set -euo pipefail
IMAGE=${1:-agentnodes/busybox:latest}
BUSYBOX=${BUSYBOX:-/bin/busybox}
if ! "$BUSYBOX" --list >/dev/null 2>&1; then
    echo "need a static busybox at $BUSYBOX (apt-get install busybox-static)" >&2
    exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/workspace" "$root/etc"
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$IMAGE" >/dev/null
echo "$IMAGE"
