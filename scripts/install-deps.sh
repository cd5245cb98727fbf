#!/bin/sh
# install-deps.sh [build|test|all] - install the Debian 12 packages mailroute
# needs, when they are missing. Needs root (apt-get). Never starts the
# packages' system services: a temporary policy-rc.d refuses them.
set -eu
what=${1:-build}
build_pkgs="build-essential cmake pkg-config libuv1-dev libgnutls28-dev libmariadb-dev libcrypt-dev libcmark-dev cmark"
test_pkgs="clang python3 python3-pytest dovecot-core dovecot-lmtpd dovecot-imapd dovecot-pop3d dovecot-submissiond postfix mariadb-server mariadb-client gnutls-bin swaks fetchmail isync dovecot-mysql"
case "$what" in
  build) pkgs=$build_pkgs ;;
  test|all) pkgs="$build_pkgs $test_pkgs" ;;
  *) echo "usage: $0 [build|test|all]" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
  exit 1
fi
echo "installing:$missing"
created_policy=no
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  created_policy=yes
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
[ "$created_policy" = yes ] && rm -f /usr/sbin/policy-rc.d
exit 0
