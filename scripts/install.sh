#!/bin/sh
# Install VramCram as a systemd service, from an unpacked release archive
# (this script beside vramcram, config.example.yaml, vramcram.service) or
# from the source tree after `make build` (bin/vramcram, config.example.yaml,
# deploy/systemd/vramcram.service).
#
#   sudo ./install.sh                    install or upgrade
#   sudo ./install.sh --uninstall        remove the binary and the unit; keep config and data
#   sudo ./install.sh --uninstall --purge   also remove /etc/vramcram, /var/lib/vramcram and the user
#
# Installs:
#   $PREFIX/bin/vramcram                 (PREFIX=/usr/local)
#   /etc/vramcram/config.yaml            from config.example.yaml; an existing one is never replaced
#   /var/lib/vramcram/                   data directory (jobs database, results), mode 0750
#   /etc/systemd/system/vramcram.service (UNITDIR), ExecStart pointing at $PREFIX/bin/vramcram
#   the system user and group vramcram
#
# DESTDIR=/some/dir stages everything under that directory (for packaging or
# a look). Then, and only then, it may run without root, and it creates no
# user, changes no owner and calls no systemctl: those happen on the target
# machine (the messages say how). Without DESTDIR it must run as root.
#
# Running it again changes nothing that is already in place. The service is
# not enabled or started: edit the config first, then
#   systemctl enable --now vramcram
set -eu

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
UNITDIR=${UNITDIR:-/etc/systemd/system}
CONFDIR=/etc/vramcram
DATADIR=/var/lib/vramcram
USER_NAME=vramcram

say() { printf '%s\n' "install.sh: $*"; }
die() { printf '%s\n' "install.sh: $*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

mode=install
purge=no
for arg in "$@"; do
  case $arg in
  --uninstall) mode=uninstall ;;
  --purge) purge=yes ;;
  -h | --help) usage; exit 0 ;;
  *) die "unknown argument $arg (see --help)" ;;
  esac
done
[ "$purge" = no ] || [ "$mode" = uninstall ] || die "--purge goes with --uninstall"

live=no # acting on this machine's system (not a DESTDIR stage)
if [ -z "$DESTDIR" ]; then
  [ "$(id -u)" = 0 ] || die "run as root (sudo), or set DESTDIR to stage the files in a directory"
  live=yes
fi
case $PREFIX in /*) ;; *) die "PREFIX=$PREFIX: want an absolute path" ;; esac

here=$(cd "$(dirname "$0")" && pwd)
if [ -f "$here/vramcram" ] && [ -f "$here/vramcram.service" ]; then # release archive
  src_bin=$here/vramcram
  src_unit=$here/vramcram.service
  src_conf=$here/config.example.yaml
else # source tree: scripts/install.sh
  root=$(cd "$here/.." && pwd)
  src_bin=$root/bin/vramcram
  src_unit=$root/deploy/systemd/vramcram.service
  src_conf=$root/config.example.yaml
fi

bin=$DESTDIR$PREFIX/bin/vramcram
unit=$DESTDIR$UNITDIR/vramcram.service
conf=$DESTDIR$CONFDIR/config.yaml
data=$DESTDIR$DATADIR

systemd_running() { [ "$live" = yes ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# put_file SRC DEST MODE: install SRC as DEST unless DEST already has the
# same content and mode (so a second run changes nothing).
put_file() {
  if [ -f "$2" ] && cmp -s "$1" "$2" && [ "$(stat -c %a "$2")" = "$3" ]; then
    say "unchanged $2"
    return
  fi
  mkdir -p "$(dirname "$2")"
  tmp=$2.install-tmp
  cp "$1" "$tmp"
  chmod "$3" "$tmp"
  mv -f "$tmp" "$2"
  say "installed $2"
}

install_all() {
  [ -f "$src_bin" ] || die "no binary at $src_bin (run make build, or use a release archive)"
  [ -f "$src_unit" ] || die "no systemd unit at $src_unit"
  [ -f "$src_conf" ] || die "no config.example.yaml at $src_conf"

  if [ "$live" = yes ]; then
    if getent passwd "$USER_NAME" >/dev/null; then
      say "user $USER_NAME exists"
    else
      useradd --system --user-group --home-dir "$DATADIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "VramCram" "$USER_NAME"
      say "created system user $USER_NAME"
    fi
  else
    say "DESTDIR set: no user created; on the target run:"
    say "  useradd --system --user-group --home-dir $DATADIR --no-create-home --shell /usr/sbin/nologin $USER_NAME"
    say "  chown $USER_NAME:$USER_NAME $DATADIR && chgrp $USER_NAME $CONFDIR/config.yaml"
  fi

  put_file "$src_bin" "$bin" 755

  # The unit names /usr/local/bin/vramcram; point it at this PREFIX.
  unit_tmp=$(mktemp)
  trap 'rm -f "$unit_tmp"' EXIT
  sed "s#/usr/local/bin/vramcram#$PREFIX/bin/vramcram#g" "$src_unit" >"$unit_tmp"
  put_file "$unit_tmp" "$unit" 644

  if [ -e "$conf" ]; then
    say "kept $conf (an existing config is never replaced; compare it with $src_conf)"
  else
    mkdir -p "$DESTDIR$CONFDIR"
    chmod 755 "$DESTDIR$CONFDIR"
    put_file "$src_conf" "$conf" 640
    [ "$live" = no ] || chgrp "$USER_NAME" "$conf"
  fi

  if [ -d "$data" ]; then
    say "kept $data"
  else
    mkdir -p "$data"
    chmod 750 "$data"
    say "created $data"
  fi
  [ "$live" = no ] || chown "$USER_NAME:$USER_NAME" "$data"

  if systemd_running; then
    systemctl daemon-reload
    say "systemd reloaded. Edit $CONFDIR/config.yaml (models, engine paths), then:"
    say "  systemctl enable --now vramcram && journalctl -u vramcram -f"
  fi
}

uninstall_all() {
  if systemd_running && systemctl list-unit-files vramcram.service >/dev/null 2>&1; then
    systemctl disable --now vramcram.service >/dev/null 2>&1 || true
  fi
  for f in "$bin" "$unit"; do
    if [ -e "$f" ]; then
      rm -f "$f"
      say "removed $f"
    fi
  done
  systemd_running && systemctl daemon-reload
  if [ "$purge" = yes ]; then
    rm -rf "$DESTDIR$CONFDIR" "$data"
    say "purged $DESTDIR$CONFDIR and $data"
    if [ "$live" = yes ] && getent passwd "$USER_NAME" >/dev/null; then
      userdel "$USER_NAME"
      say "removed user $USER_NAME"
    fi
  else
    say "kept $DESTDIR$CONFDIR and $data (add --purge to remove them)"
  fi
}

if [ "$mode" = install ]; then install_all; else uninstall_all; fi
