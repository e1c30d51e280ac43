#!/usr/bin/env bash
# make vulncheck: govulncheck with the project's pinned toolchain against a
# local Go vulnerability database built from the golang.org/x/vulndb module,
# so it needs nothing but the Go module proxy. The database and the tools are
# cached outside the repository (VRAMCRAM_CACHE, default
# ${XDG_CACHE_HOME:-$HOME/.cache}/vramcram). The findings are judged against
# scripts/vulncheck/allow.txt by scripts/vulncheck/main.go.
#
#   VULNDB_VERSION=latest make vulncheck   # try the newest database, then pin it here
set -euo pipefail
cd "$(dirname "$0")/../.."

GOVULNCHECK_VERSION=${GOVULNCHECK_VERSION:-v1.10.0}
VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3}
GO=${GO:-go}

# govulncheck type-checks the standard library of the go on PATH, and asks
# that go its version with GO111MODULE=off, where GOTOOLCHAIN does not
# switch: put the pinned toolchain's own go first.
PATH="$("$GO" env GOROOT)/bin:$PATH"
export PATH
gover=$(go env GOVERSION)

cache=${VRAMCRAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vramcram}/vulncheck
mkdir -p "$cache/bin" "$cache/db" "$cache/tmp"
work=$(mktemp -d "$cache/tmp/run.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Module look-ups run outside our module so they never touch go.mod/go.sum.
modgo() { (cd "$work" && GOFLAGS=-mod=mod go "$@"); }

# install PACKAGE@VERSION NAME: build a tool once into the cache.
install() {
	local bin="$cache/bin/$2"
	if [ ! -x "$bin" ]; then
		echo "vulncheck: building $1 with $gover (first run only)" >&2
		(cd "$work" && GOFLAGS= GOBIN="$work/bin" go install "$1") >&2
		local name=${1%@*}
		mv "$work/bin/${name##*/}" "$bin"
	fi
	printf '%s\n' "$bin"
}

vulndb=$(modgo list -m -f '{{.Version}}' "golang.org/x/vulndb@$VULNDB_VERSION")
dbdir="$cache/db/$vulndb"
if [ ! -f "$dbdir/index/db.json" ]; then
	modgo mod download "golang.org/x/vulndb@$vulndb"
	read -r src stamp < <(modgo list -m -f '{{.Dir}} {{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "golang.org/x/vulndb@$vulndb")
	indexdb=$(install "golang.org/x/vulndb/cmd/indexdb@$vulndb" "indexdb-$vulndb-$gover")
	echo "vulncheck: indexing $src/data/osv" >&2
	"$indexdb" -vulns "$src/data/osv" -out "$work/db"
	# data/osv leaves every "modified" at zero (the published database stamps
	# them when it is deployed), so the date of the database is the date of
	# the vulndb commit it was built from.
	printf '{"modified":"%s"}' "$stamp" >"$work/db/index/db.json"
	gzip -9 -c "$work/db/index/db.json" >"$work/db/index/db.json.gz"
	rm -rf "$dbdir"
	mv "$work/db" "$dbdir"
fi

govulncheck=$(install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION" "govulncheck-$GOVULNCHECK_VERSION-$gover")
"$govulncheck" -db "file://$dbdir" -format json ./... >"$work/scan.json"
go run ./scripts/vulncheck -allow scripts/vulncheck/allow.txt -in "$work/scan.json" \
	-db-name "golang.org/x/vulndb@$vulndb" ./...
