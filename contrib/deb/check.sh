#!/usr/bin/env bash
# Installs a muster package into a scratch root with dpkg (nothing of the host is
# touched) and checks it: the files it installs are exactly contrib/deb/files.txt, the
# binary runs, the man page and completions are what the binary generates, and systemd
# accepts the units.
#   contrib/deb/check.sh [target/debian/muster_*.deb]
set -euo pipefail
cd "$(dirname "$0")/../.."

deb=${1:-$(ls -t target/debian/muster_*.deb | head -1)}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# A root of its own for dpkg: its database starts empty there. libc is the host's, so
# the dependency on it cannot be met inside the scratch root: only that is forced.
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
fail() { echo "contrib/deb/check.sh: $*" >&2; exit 1; }

dpkg --root="$root" --force-depends --install "$deb" >"$root/dpkg.log" 2>&1 \
    || { cat "$root/dpkg.log"; fail "dpkg cannot install $deb"; }
echo "installed $deb into a scratch root"

listed=$(cd "$root" && find . \( -type f -o -type l \) ! -path './var/lib/dpkg/*' ! -path ./dpkg.log | LC_ALL=C sort)
if ! diff -u contrib/deb/files.txt <(printf '%s\n' "$listed"); then
    fail "the package's files differ from contrib/deb/files.txt (- expected, + packaged)"
fi
# dpkg's own record agrees.
dpkg --root="$root" --status muster | grep -q '^Status: install ok installed' \
    || fail "dpkg does not record muster as installed"

muster="$root/usr/bin/muster"
"$muster" --version | grep -q '^muster ' || fail "the installed binary does not run"
zcat "$root/usr/share/man/man1/muster.1.gz" | cmp -s - <("$muster" man) \
    || fail "the man page is not the one the binary generates"
cmp -s "$root/usr/share/bash-completion/completions/muster" <("$muster" completions bash) \
    || fail "the bash completions are not the binary's"
cmp -s "$root/usr/share/zsh/vendor-completions/_muster" <("$muster" completions zsh) \
    || fail "the zsh completions are not the binary's"
cmp -s "$root/usr/share/fish/vendor_completions.d/muster.fish" <("$muster" completions fish) \
    || fail "the fish completions are not the binary's"
bash -n "$root/usr/share/bash-completion/completions/muster" || fail "bash cannot parse its completions"
for unit in system/muster.service user/muster.service; do
    grep -q '^KillMode=mixed$' "$root/usr/lib/systemd/$unit" || fail "$unit: no KillMode=mixed"
    grep -q '^Type=notify$' "$root/usr/lib/systemd/$unit" || fail "$unit: not Type=notify"
done
if command -v systemd-analyze >/dev/null; then
    # systemd only warns about a setting it cannot parse: any word from it is a failure.
    # The system unit against the scratch root, where /usr/bin/muster is.
    said=$(systemd-analyze verify --man=no --recursive-errors=no --root="$root" \
        /usr/lib/systemd/system/muster.service 2>&1) && [ -z "$said" ] \
        || fail "systemd-analyze does not accept the system unit: $said"
    # The user unit (no --root for user units): a copy naming the installed binary.
    mkdir "$root/check" "$root/check/run"
    sed "s#/usr/bin/muster#$muster#" "$root/usr/lib/systemd/user/muster.service" >"$root/check/muster.service"
    said=$(XDG_RUNTIME_DIR="$root/check/run" systemd-analyze --user verify --man=no \
        --recursive-errors=no "$root/check/muster.service" 2>&1) && [ -z "$said" ] \
        || fail "systemd-analyze does not accept the user unit: $said"
fi
echo "package contents: $(wc -l <contrib/deb/files.txt) files as listed; binary, man page, completions and units check out"
