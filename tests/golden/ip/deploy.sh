#!/usr/bin/env bash
# Installs one release of weather and switches the site to it. Rendered by flask-droplet.
#
#   sudo deploy.sh [--skip-release-command] RELEASE_ID BUNDLE [PUBLIC_IPV4] < app-environment
#   sudo deploy.sh rollback [RELEASE_ID]
#   sudo deploy.sh run [--] COMMAND [ARGS...]
#   sudo deploy.sh logs [-f] [-n LINES]
#   sudo deploy.sh backup
#   sudo deploy.sh restore [BACKUP]
#
# RELEASE_ID is the first 12 hex digits of the bundle's sha256. The app's
# environment (a systemd EnvironmentFile) arrives on stdin, never as an argument.
# PUBLIC_IPV4 is the address the site is reached at (the Reserved IP); without it,
# the last one given. On success the script prints the release id, the site's URL,
# and a line "warning: ..." for each hardening extra that is not running. A release takes traffic only after it has answered its health
# check through nginx as a candidate beside the live release; until then the live
# one serves. With HTTPS on, the certificate comes first: a domain that does not
# resolve here fails the deploy before anything changes.
# Behind a Load Balancer, the switch happens out of its rotation: the balancer's
# health check answers 503 until the new release answers, and the deploy waits for
# the balancer to see each. --skip-release-command leaves releaseCommand to the
# droplet that ran it for this release (the first of a rollout).
# `rollback` switches back to the release that was live before (or RELEASE_ID),
# through the same checks. `run` runs a one-off command as the app's user in the
# live release, with its environment and sandbox, and exits with its exit code.
# `logs` shows the site's recent requests (nginx's access log, each with its id)
# and the journal of the app, nginx and the deploy's own units; -f follows them.
# `backup` backs up the state directory now and prints the backup's name;
# `restore` puts a backup back (the newest, or BACKUP), with the app stopped
# meanwhile, after backing up the state as it is.
set -euo pipefail

readonly APP_NAME=weather
readonly APP_USER=weather
readonly ROOT=/srv/weather
readonly RELEASES=/srv/weather/releases
readonly CURRENT=/srv/weather/current
readonly STATE_DIR=/var/lib/weather
# The DigitalOcean Volume the state directory lives on (volumeSize), and its units; no device for none.
readonly STATE_DEVICE=/dev/disk/by-id/scsi-0DO_Volume_weather-dev-state
readonly STATE_VOLUME_GIB=10
readonly STATE_MOUNT=var-lib-weather.mount
readonly STATE_FORMAT=weather-state-format.service
readonly CONFIG_DIR=/etc/weather
readonly ENV_FILE=/etc/weather/env
readonly SERVICE=weather.service
readonly SOCKET=weather.socket
readonly CANDIDATE=weather-candidate
readonly CANDIDATE_SOCKET=/run/weather-candidate.sock
readonly CANDIDATE_PORT=8081
readonly NGINX_SITE=/etc/nginx/sites-available/weather.conf
readonly ACCESS_LOG=/var/log/nginx/weather.access.log
readonly JOURNALD_DROP_IN=/etc/systemd/journald.conf.d/60-flaskdroplet.conf
# Backups of the state directory (backupDays; 0 for none), taken by BACKUP_UNIT and kept in BACKUPS.
readonly BACKUP_DAYS=7
readonly BACKUP_UNIT=weather-backup
readonly BACKUP_SCRIPT=/usr/local/lib/flaskdroplet/weather-backup.py
readonly BACKUPS=/var/backups/weather
readonly BACKUP_INCOMING=/var/backups/weather/.incoming
# Static files (staticDir, inside the app) and the store of their contents by hash, served at /static/_v/.
readonly STATIC_DIR=weather/static
readonly ASSETS=/srv/weather/assets
readonly PROXY_CACHE=/var/lib/nginx/cache-weather
readonly WSGI_TARGET=wsgi:app
readonly WORKERS=3
readonly GUNICORN_VERSION=23.0.0
readonly UV_VERSION=0.13.8
readonly UV="/opt/flaskdroplet/uv-$UV_VERSION/bin/uv"
# Where the app's packages import from, inside the release's app directory ("" or src).
readonly IMPORT_ROOT=''
# Run once for each new release, before it goes live (releaseCommand); empty for none.
SKIP_RELEASE_COMMAND=0
readonly RELEASE_COMMAND=()
readonly KEEP=5
# With database sqlite, the app's DATABASE_URL: a file in the state directory (appEnv may set its own).
readonly SQLITE_URL=sqlite:////var/lib/weather/database.sqlite3
# Behind a Load Balancer (instances > 1): its health check's port, the file that fails it, and the
# longest the balancer takes to notice each way.
readonly BEHIND_BALANCER=0
readonly BALANCER_PORT=8080
readonly BALANCER_DRAIN=/run/weather-balancer-drain
readonly OUT_OF_ROTATION_SECONDS=12
readonly INTO_ROTATION_SECONDS=12
# HTTPS: a certificate from ACME_SERVER for HOST_NAMES (or, with no domain, the public address).
readonly HTTPS=1
readonly DOMAIN=''
readonly HOST_NAMES=()
readonly ACME_SERVER=https://acme-v02.api.letsencrypt.org/directory
readonly ACME_EMAIL=''
readonly ACME_WEBROOT=/var/www/flaskdroplet-acme
readonly CERT_DIR=/etc/letsencrypt/live/weather
readonly CERTBOT_VERSION=5.8.0
readonly CERTBOT=/opt/flaskdroplet/certbot-5.8.0/bin/certbot
readonly RENEW_UNIT=flaskdroplet-certbot-renew
readonly NGINX_DROP_IN=/etc/systemd/system/nginx.service.d/flaskdroplet-sandbox.conf
readonly HEALTH_HOST=127.0.0.1
readonly HEALTH_PATH=/healthz
readonly HEALTH_TRIES=30
# Disk kept free beyond what a release is estimated to need, in MiB, and the estimate of a new virtualenv
# when no release has one yet to measure.
readonly DISK_MARGIN_MIB=64
readonly NEW_VENV_MIB=200
# Memory kept free beyond what the app's processes are measured to need, in MiB.
readonly MEMORY_MARGIN_MIB=64
# The service's sandbox, for the checks that run each release before it is live.
readonly SANDBOX=(
    --property=UMask=0027
    --property=NoNewPrivileges=yes
    --property=CapabilityBoundingSet=
    --property=AmbientCapabilities=
    --property=PrivateTmp=yes
    --property=PrivateDevices=yes
    --property=PrivateUsers=yes
    --property=PrivateMounts=yes
    --property=DevicePolicy=closed
    --property=ProtectSystem=strict
    --property=ProtectHome=yes
    --property=ProtectKernelTunables=yes
    --property=ProtectKernelModules=yes
    --property=ProtectKernelLogs=yes
    --property=ProtectControlGroups=yes
    --property=ProtectClock=yes
    --property=ProtectHostname=yes
    --property=ProtectProc=invisible
    --property=ProcSubset=pid
    --property=KeyringMode=private
    --property='RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6'
    --property=RestrictNamespaces=yes
    --property=RestrictRealtime=yes
    --property=RestrictSUIDSGID=yes
    --property=RemoveIPC=yes
    --property=LockPersonality=yes
    --property=MemoryDenyWriteExecute=yes
    --property=SystemCallArchitectures=native
    --property=SystemCallFilter=@system-service
    --property='SystemCallFilter=~@privileged @resources'
)

log() { printf '%s deploy[%s]: %s\n' "$(date +%H:%M:%S)" "$APP_NAME" "$*" >&2; }
fail() {
    log "FAILED: $*"
    log "logs: journalctl -u $SERVICE -n 50; /var/log/nginx/error.log"
    exit 1
}

release_properties() { # RELEASE_DIR: systemd-run options that run a release as the live service runs
    RELEASE_PROPERTIES=(
        --uid="$APP_USER" --gid="$APP_USER"
        --working-directory="$1/app"
        --property=EnvironmentFile="$1/release.env"
        --property=EnvironmentFile=-"$ENV_FILE"
        --property=StateDirectory="$APP_NAME" --property=StateDirectoryMode=0750
        --property=RequiresMountsFor="$STATE_DIR"
        "${SANDBOX[@]}"
    )
}

run_in_release() { # RELEASE_DIR COMMAND [ARGS...]: as the app's user, in the release's sandbox and environment
    local release_dir=$1 name=$2 program=$2 mode=--pipe
    shift 2
    if [[ $program == */* ]]; then
        [[ $program == /* ]] || program=$release_dir/app/$program
    else
        program=$(PATH="$release_dir/app/.venv/bin:$PATH" command -v -- "$program") || program=
    fi
    if [[ -z $program || ! -x $program ]]; then
        log "no program '$name' in the release's virtualenv ($release_dir/app/.venv/bin), the app or PATH"
        return 127
    fi
    # A terminal on both ends (ssh -t) gets one inside too, for interactive commands such as `flask shell`.
    if [[ -t 0 && -t 1 ]]; then mode=--pty; fi
    release_properties "$release_dir"
    systemd-run --quiet --wait --collect "$mode" "${RELEASE_PROPERTIES[@]}" "$program" "$@"
}

health() { # PORT or live: GET HEALTH_PATH through nginx, on a port of its own (the candidate's, the balancer's check) or as the live site is served
    if [[ $1 == live && $TLS_ACTIVE == 1 ]]; then
        # The app through nginx's HTTPS site on this machine; the certificate is certbot's business, not this check's.
        curl --silent --fail --max-time 5 --insecure --resolve "$HEALTH_HOST:443:127.0.0.1" \
            "https://$HEALTH_HOST$HEALTH_PATH" >/dev/null
    else
        curl --silent --fail --max-time 5 -H "Host: $HEALTH_HOST" "http://127.0.0.1:${1/live/80}$HEALTH_PATH" >/dev/null
    fi
}

wait_healthy() { # PORT
    local _
    for _ in $(seq "$HEALTH_TRIES"); do
        if health "$1"; then return 0; fi
        sleep 1
    done
    return 1
}

stop_candidate() {
    systemctl stop "$CANDIDATE.socket" "$CANDIDATE.service" 2>/dev/null || true
    systemctl reset-failed "$CANDIDATE.socket" "$CANDIDATE.service" 2>/dev/null || true
}

available_memory_mib() { # MemAvailable, or less where a cgroup limit holds this machine (a container)
    local available limit usage inactive
    available=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
    for files in "memory.max memory.current inactive_file" \
        "memory/memory.limit_in_bytes memory/memory.usage_in_bytes total_inactive_file"; do
        read -r limit usage inactive <<<"$files"
        [[ -r /sys/fs/cgroup/$limit && -r /sys/fs/cgroup/$usage ]] || continue
        limit=$(cat "/sys/fs/cgroup/$limit")
        if [[ ! $limit =~ ^[0-9]+$ ]] || ((limit >= 1 << 50)); then continue; fi # "max": no limit
        usage=$(cat "/sys/fs/cgroup/$usage")
        inactive=$(awk -v key="$inactive" '$1 == key {print $2}' "/sys/fs/cgroup/${files%%/*}/memory.stat" 2>/dev/null ||
            echo 0)
        limit=$(((limit - usage + ${inactive:-0}) / 1048576))
        ((limit >= available)) || available=$limit
    done
    echo "$available"
}

check_memory() { # before anything changes: the candidate, then WORKERS new workers, fit beside what runs now
    local main rss processes each available need candidate
    main=$(systemctl show -p MainPID --value "$SERVICE")
    [[ $main != 0 ]] || return 0 # nothing live to measure a process by
    rss=$(ps -o rss= -p "$main" --ppid "$main" | awk '{kib += $1} END {print int(kib / 1024)}')
    processes=$(ps -o pid= -p "$main" --ppid "$main" | wc -l)
    each=$((rss / processes))
    available=$(available_memory_mib)
    # The candidate (a master and a worker) runs beside the live release; after the switch,
    # WORKERS workers and a master take the place of the live release's processes.
    need=$((each * (WORKERS + 1) - rss))
    candidate=$((each * 2))
    ((need > candidate)) || need=$candidate
    if ((need + MEMORY_MARGIN_MIB > available)); then
        fail "release $release_id: $WORKERS workers need about $((each * (WORKERS + 1))) MiB ($each MiB a process," \
            "as the live release uses), $need MiB more than now, and $available MiB are free." \
            "Set workers lower or choose a larger size; the live release keeps serving."
    fi
}

wait_for_apt() { # before installing: an apt or dpkg run (unattended-upgrades, say) finishes first, for up to 10 minutes
    local waited=0
    # apt and dpkg hold fcntl locks (which flock(1) does not see); Python can test them.
    until python3 -c '
import fcntl, sys
for path in ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock"):
    try:
        with open(path, "a") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        pass
    except OSError:
        sys.exit(1)
'; do
        ((waited % 30)) || log "waiting for apt/dpkg to finish: it holds /var/lib/dpkg/lock-frontend"
        ((waited < 600)) || fail "apt/dpkg has held its lock for 10 minutes; deploy again once it is done"
        sleep 2
        waited=$((waited + 2))
    done
    ((waited == 0)) || log "apt/dpkg finished after ${waited} s"
}

install_tool() { # PACKAGE VERSION PROGRAM: PACKAGE==VERSION from PyPI, in a virtualenv of its own that holds PROGRAM
    local venv=${3%/bin/*}
    [[ ! -x $3 ]] || return 0
    wait_for_apt
    log "installing $1 $2"
    rm -rf "$venv"
    python3 -m venv "$venv" &&
        "$venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "$1==$2" >&2
}

install_dependencies() { # VENV DEPS_DIR: a new virtualenv with the release's dependencies and Gunicorn
    local venv=$1 deps=$2
    if [[ -f $deps/uv.lock ]]; then
        install_tool uv "$UV_VERSION" "$UV"
        log "installing the locked dependencies (uv.lock) into $venv"
        # Exactly the lock: --locked fails when it no longer matches pyproject.toml. The system's Python
        # and certificate authorities, as pip uses them.
        export UV_PYTHON_DOWNLOADS=never UV_SYSTEM_CERTS=1 UV_NO_CACHE=1
        UV_PROJECT_ENVIRONMENT=$venv "$UV" sync --quiet --locked --no-dev --no-install-project \
            --python /usr/bin/python3 --project "$deps" >&2
        if [[ ! -x $venv/bin/gunicorn ]]; then
            "$UV" pip install --quiet --python "$venv/bin/python" "gunicorn==$GUNICORN_VERSION" >&2
        fi
    else
        log "installing requirements into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check \
            -r "$deps/requirements.txt" "gunicorn==$GUNICORN_VERSION" >&2
    fi
}

installed() { # SOURCE TARGET: TARGET (root's, 0644) made a copy of SOURCE when they differ; true when it was
    cmp -s "$1" "$2" && return 1
    # Called as a condition, where `set -e` does not reach: a failed install must still stop the deploy.
    install -D -m 0644 -o root -g root "$1" "$2" || fail "could not install $2"
}

state_dir_holds_data() { # DIR: anything in it but the file system's lost+found
    [[ -d $1 ]] && find "$1" -mindepth 1 -maxdepth 1 ! -name lost+found -print -quit | grep -q .
}

ensure_state_volume() { # the state directory is the Volume's file system, mounted and as large as the Volume
    [[ -n $STATE_DEVICE ]] || return 0
    local unit changed=0 waited=0 aside=$STATE_DIR.before-volume staged
    until [[ -b $STATE_DEVICE ]]; do
        ((waited < 30)) || fail "the Volume is not attached: $STATE_DEVICE does not exist after 30 s." \
            "Attach it (pulumi up does), or set volumeSize to 0; nothing has changed"
        sleep 2
        waited=$((waited + 2))
    done
    # The units come with the release: a droplet that predates its Volume gets them here.
    for unit in "$STATE_FORMAT" "$STATE_MOUNT"; do
        staged=$(mktemp)
        tar -xzf "$bundle" -O "server/$unit" >"$staged"
        if installed "$staged" "/etc/systemd/system/$unit"; then changed=1; fi
        rm -f "$staged"
    done
    ((changed == 0)) || systemctl daemon-reload
    if ! mountpoint -q "$STATE_DIR"; then
        if state_dir_holds_data "$STATE_DIR"; then
            move_state_to_volume "$aside"
        elif ! systemctl enable --quiet --now "$STATE_MOUNT"; then
            fail "the Volume did not mount at $STATE_DIR (journalctl -u $STATE_MOUNT -u $STATE_FORMAT)"
        fi
    fi
    [[ $(stat -c %Hd:%Ld "$STATE_DIR") == "$(stat -L -c %Hr:%Lr "$STATE_DEVICE")" ]] ||
        fail "$STATE_DIR is mounted, but not from the Volume $STATE_DEVICE"
    # A Volume made larger (volumeSize) takes its file system along, online; a failure is reported, not fatal.
    if (($(volume_unused_mib) > 0)); then
        log "growing the file system on the Volume to ${STATE_VOLUME_GIB} GiB"
        /usr/lib/systemd/systemd-growfs "$STATE_DIR" >&2 || true
    fi
    log "state: $STATE_DIR on the Volume ($(df -h --output=size "$STATE_DIR" | tail -1 | tr -d ' '))"
}

move_state_to_volume() { # ASIDE: a droplet that kept its state on its own disk moves it to the Volume, once
    local aside=$1 problem
    [[ ! -e $aside ]] || fail "$aside exists from an earlier move to the Volume; move it away first"
    log "moving the state in $STATE_DIR onto the Volume; the app stops meanwhile"
    systemctl stop "$SOCKET" "$SERVICE"
    mv -T "$STATE_DIR" "$aside"
    if ! systemctl enable --quiet --now "$STATE_MOUNT"; then
        problem="the Volume did not mount at $STATE_DIR (journalctl -u $STATE_MOUNT -u $STATE_FORMAT)"
    elif state_dir_holds_data "$STATE_DIR"; then
        problem="the Volume already holds data and so does $STATE_DIR on the droplet's disk; keep one"
        problem+=" (copy what you need onto the Volume), then deploy again"
    else
        cp -a "$aside/." "$STATE_DIR/"
        systemctl start "$SOCKET"
        log "the state is on the Volume now; the copy on the droplet's disk stays in $aside"
        return 0
    fi
    # Back as it was, and the Volume's units gone, so that nothing mounts it over the state.
    systemctl disable --quiet --now "$STATE_MOUNT" || true
    rm -f "/etc/systemd/system/$STATE_MOUNT" "/etc/systemd/system/$STATE_FORMAT"
    systemctl daemon-reload
    mv -T "$aside" "$STATE_DIR"
    systemctl start "$SOCKET"
    fail "$problem. The app serves $STATE_DIR as it was"
}

volume_unused_mib() { # MiB of the Volume that its file system does not cover yet; 0 without a mounted Volume
    local device fs
    if [[ -z $STATE_DEVICE ]] || ! mountpoint -q "$STATE_DIR"; then
        echo 0
        return
    fi
    device=$(blockdev --getsize64 "$STATE_DEVICE")
    fs=$(dumpe2fs -h "$STATE_DEVICE" 2>/dev/null | awk -F: '/^Block count:/ {n = $2} /^Block size:/ {s = $2} END {print n * s}')
    echo $(((device - fs) / 1048576))
}

store_static_files() { # RELEASE_DIR: each static file becomes a link to its content's copy in the store
    local digest path stored
    [[ -n $STATIC_DIR ]] || return 0
    while read -r digest path; do
        [[ $digest =~ ^[0-9a-f]{12}$ && /$path/ != */../* ]] || fail "static manifest line '$digest $path' is not HASH PATH"
        stored=$ASSETS/$digest/$path
        if [[ ! -f $stored ]]; then
            [[ $(sha256sum <"$1/app/$STATIC_DIR/$path" | cut -c1-12) == "$digest" ]] ||
                fail "static file $path does not match its hash in the manifest"
            install -D -m 0644 "$1/app/$STATIC_DIR/$path" "$stored"
        fi
        # One file for one content: its ETag and Last-Modified stay the same while the content does.
        ln -f "$stored" "$1/app/$STATIC_DIR/$path"
    done <"$1/server/static-manifest"
}

link_state() { # RELEASE_DIR: the paths in its server/state-links become links into the state directory
    local app_path state_path
    install -d -m 0750 -o "$APP_USER" -g "$APP_USER" "$STATE_DIR"
    while read -r app_path state_path; do
        [[ /$app_path/ != */../* && /$state_path/ != */../* ]] || fail "state link '$app_path' leaves its directory"
        (umask 0027 && runuser -u "$APP_USER" -- mkdir -p "$STATE_DIR/$state_path")
        rm -rf "${1:?}/app/$app_path"
        mkdir -p "$(dirname "$1/app/$app_path")"
        ln -sfn "$STATE_DIR/$state_path" "$1/app/$app_path"
    done <"$1/server/state-links"
}

run_release_command() { # RELEASE_DIR [LIVE_RELEASE]: releaseCommand, once for each release (a marker records it)
    local release_dir=$1 marker=$1/.release-command-done status=0
    [[ -n ${RELEASE_COMMAND[*]} ]] || return 0
    if ((SKIP_RELEASE_COMMAND)); then
        log "release command: left to the droplet that ran it for this release"
        return 0
    fi
    [[ $(cat "$marker" 2>/dev/null) != "${RELEASE_COMMAND[*]}" ]] || return 0
    log "running the release command: ${RELEASE_COMMAND[*]}"
    run_in_release "$release_dir" "${RELEASE_COMMAND[@]}" </dev/null >&2 || status=$?
    if ((status != 0)); then
        fail "release $(basename "$release_dir"): releaseCommand '${RELEASE_COMMAND[*]}' exited $status (output above); ${2:+$2 is still live}"
    fi
    printf '%s' "${RELEASE_COMMAND[*]}" >"$marker"
}

certificate_serves() { # [any-server]: the certificate covers every name (or the address) for an hour more, from ACME_SERVER
    local cert=$CERT_DIR/fullchain.pem sans name
    [[ -f $cert ]] || return 1
    if [[ ${1:-} != any-server ]]; then
        grep -qxF "server = $ACME_SERVER" "/etc/letsencrypt/renewal/$APP_NAME.conf" 2>/dev/null || return 1
    fi
    openssl x509 -in "$cert" -noout -checkend 3600 >/dev/null || return 1
    sans=$(openssl x509 -in "$cert" -noout -ext subjectAltName | tail -n +2 | tr -d ' ' | tr ',' '\n')
    for name in "${HOST_NAMES[@]:-$PUBLIC_IPV4}"; do
        grep -qxF -e "DNS:$name" -e "IPAddress:$name" <<<"$sans" || return 1
    done
}

check_dns() { # every name resolves to PUBLIC_IPV4, or the deploy stops before any ACME order
    local name addresses
    for name in "${HOST_NAMES[@]}"; do
        addresses=$(getent ahostsv4 "$name" | awk '{print $1}' | sort -u | paste -sd ' ' -) || true
        if [[ " $addresses " != *" $PUBLIC_IPV4 "* ]]; then
            fail "https: $name resolves to ${addresses:-nothing}, not to this server's address $PUBLIC_IPV4." \
                "Point its A record at $PUBLIC_IPV4 (or set dnsZone), then deploy again." \
                "No certificate was requested and the live site is unchanged."
        fi
    done
}

request_certificate() { # over HTTP-01, answered from ACME_WEBROOT, which nginx serves for any name on port 80
    local identity=() contact=(--register-unsafely-without-email) name
    if [[ -n $DOMAIN ]]; then
        # Named, so that a lineage that held an address certificate does not keep its 6-day profile.
        identity=(--preferred-profile classic)
        for name in "${HOST_NAMES[@]}"; do identity+=(--domain "$name"); done
    else
        # Let's Encrypt issues IP-address certificates in its 6-day profile only.
        identity=(--ip-address "$PUBLIC_IPV4" --preferred-profile shortlived)
    fi
    if [[ -n $ACME_EMAIL ]]; then contact=(--email "$ACME_EMAIL" --no-eff-email); fi
    install -d -m 0755 "$ACME_WEBROOT"
    log "requesting a certificate for ${HOST_NAMES[*]:-$PUBLIC_IPV4} from $ACME_SERVER"
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt "$CERTBOT" certonly --non-interactive --agree-tos \
        --webroot --webroot-path "$ACME_WEBROOT" --cert-name "$APP_NAME" --server "$ACME_SERVER" \
        "${contact[@]}" "${identity[@]}" --force-renewal --deploy-hook "systemctl reload nginx" >&2
}

ensure_certificate() { # before anything changes: a certificate that serves, or a loud reason why there is none
    CERT_READY=0
    [[ $HTTPS == 1 ]] || return 0
    if certificate_serves; then
        CERT_READY=1
        return 0
    fi
    if [[ -n $DOMAIN ]]; then check_dns; fi
    if install_tool certbot "$CERTBOT_VERSION" "$CERTBOT" && request_certificate && certificate_serves; then
        CERT_READY=1
        return 0
    fi
    if [[ -n $DOMAIN ]]; then
        fail "https: no certificate for ${HOST_NAMES[*]} from $ACME_SERVER (certbot's output above;" \
            "/var/log/letsencrypt/letsencrypt.log). The live site is unchanged."
    fi
    if certificate_serves any-server; then
        CERT_READY=1
        log "WARNING: no certificate for $PUBLIC_IPV4 from $ACME_SERVER (certbot's output above);" \
            "the current certificate keeps serving and the next deploy tries again"
    else
        log "WARNING: no certificate for $PUBLIC_IPV4 from $ACME_SERVER (certbot's output above);" \
            "the site stays on plain HTTP and the next deploy tries again"
    fi
}

select_site() { # RELEASE_DIR: its HTTPS site once a certificate serves, else its HTTP site; nginx takes it only if it parses
    local site=$1/server/nginx-site.conf
    TLS_ACTIVE=0
    # nginx's connections per worker (nginx.conf holds the only place for them); set at first boot too.
    if ! grep -Eq '^\s*worker_connections\s+4096;' /etc/nginx/nginx.conf; then
        sed -i -E 's/^(\s*worker_connections)\s+[0-9]+;/\1 4096;/' /etc/nginx/nginx.conf
        nginx -t 2>/dev/null && systemctl reload nginx
    fi
    if [[ $CERT_READY == 1 && -f $1/server/nginx-site-tls.conf ]]; then
        site=$1/server/nginx-site-tls.conf
        TLS_ACTIVE=1
    fi
    cmp -s "$site" "$NGINX_SITE" && return 0
    cp -p "$NGINX_SITE" "$NGINX_SITE.previous" 2>/dev/null || true
    install -m 0644 -o root -g root "$site" "$NGINX_SITE"
    if ! nginx -t 2>/dev/null; then
        if [[ -f $NGINX_SITE.previous ]]; then mv -f "$NGINX_SITE.previous" "$NGINX_SITE"; fi
        fail "release $(basename "$1"): nginx rejects its site configuration (nginx -t)"
    fi
    systemctl reload nginx
}

report_warnings() { # what serves but needs a hand, each on stdout as "warning: ..." and in the log
    local warning unused
    if ! systemctl is-active --quiet fail2ban; then
        warning="fail2ban is not running (journalctl -u fail2ban): failed SSH logins are not banned"
        log "WARNING: $warning"
        echo "warning: $warning"
    fi
    unused=$(volume_unused_mib)
    if ((unused > 0)); then
        warning="the Volume has $unused MiB its file system does not use: growing it online failed"
        warning+=" (the deploy's log); sudo resize2fs $STATE_DEVICE"
        log "WARNING: $warning"
        echo "warning: $warning"
    fi
}

public_url() {
    printf '%s://%s/\n' "$( ((TLS_ACTIVE)) && echo https || echo http)" "${DOMAIN:-$PUBLIC_IPV4}"
}

report_outcome() { # RELEASE_ID: stdout, read by parse_deploy_output: the release id, the URL, the warnings
    echo "$1"
    public_url
    report_warnings
}

leave_rotation() { # behind a balancer: its health check fails here, and the deploy waits until it has seen that
    ((BEHIND_BALANCER)) || return 0
    touch "$BALANCER_DRAIN"
    # However the deploy ends, the drain ends with it: then the app's own health decides the check.
    trap 'rm -f "$BALANCER_DRAIN"' EXIT
    log "out of the balancer's rotation: waiting ${OUT_OF_ROTATION_SECONDS} s for its checks to notice"
    sleep "$OUT_OF_ROTATION_SECONDS"
}

rejoin_rotation() { # the balancer's health check answers again (from the app); the deploy waits until it has seen that
    ((BEHIND_BALANCER)) || return 0
    [[ -e $BALANCER_DRAIN ]] || return 0
    rm -f "$BALANCER_DRAIN"
    health "$BALANCER_PORT" ||
        log "the balancer's check on port $BALANCER_PORT does not answer 2xx (curl -i http://127.0.0.1:$BALANCER_PORT$HEALTH_PATH)"
    log "back in the balancer's rotation: waiting ${INTO_ROTATION_SECONDS} s for its checks to notice"
    sleep "$INTO_ROTATION_SECONDS"
}

go_live() { # RELEASE_DIR: point `current` at it (atomically) and restart the service on it
    ln -sfn "$1" "$ROOT/.current.new"
    mv -T "$ROOT/.current.new" "$CURRENT"
    systemctl restart "$SERVICE"
    # nginx's cache holds the release before's answers; the restart waited for its last one.
    find "$PROXY_CACHE" -type f -delete 2>/dev/null || true
}

activate() { # RELEASE_DIR: check it as a candidate, then switch the live service to it
    local release_dir=$1 release live_before
    release=$(basename "$release_dir")
    live_before=$(readlink "$CURRENT" || true)

    # The candidate: the release's Gunicorn on a socket of its own, as the app's user, with the
    # live environment, reached through nginx on a loopback-only port.
    stop_candidate
    log "starting release $release as a candidate"
    release_properties "$release_dir"
    systemd-run --quiet --collect --unit="$CANDIDATE" \
        --socket-property=ListenStream="$CANDIDATE_SOCKET" \
        --socket-property=SocketUser=www-data --socket-property=SocketMode=0600 \
        "${RELEASE_PROPERTIES[@]}" \
        "$release_dir/app/.venv/bin/gunicorn" --workers 1 "$WSGI_TARGET"
    if ! wait_healthy "$CANDIDATE_PORT"; then
        journalctl -u "$CANDIDATE.service" -n 30 --no-pager >&2 || true
        stop_candidate
        fail "release $release: GET $HEALTH_PATH did not answer 2xx within $HEALTH_TRIES s; ${live_before:+$(basename "$live_before") is still live}"
    fi

    # systemd holds the live socket open while Gunicorn restarts: requests wait, none fail. Behind a
    # balancer, the droplet leaves its rotation first, so that the restart's wait falls on no visitor.
    if [[ -n $live_before ]]; then leave_rotation; fi
    log "switching to release $release"
    if [[ -n $live_before && $live_before != "$release_dir" ]]; then
        printf '%s\n' "$live_before" >"$ROOT/previous"
    fi
    go_live "$release_dir"
    if ! wait_healthy live; then
        if [[ -n $live_before && $live_before != "$release_dir" && -d $live_before ]]; then
            log "release $release is unhealthy once live; switching back to $(basename "$live_before")"
            go_live "$live_before"
            wait_healthy live && rejoin_rotation
        fi
        stop_candidate
        fail "release $release: GET $HEALTH_PATH through nginx did not answer 2xx within $HEALTH_TRIES s once live"
    fi
    stop_candidate
    rejoin_rotation
}

venv_key_of() { # DEPS_DIR: the virtualenv's key, shared by releases with the same dependencies
    (cd "$1" && sha256sum -- *; echo "gunicorn==$GUNICORN_VERSION"; python3 --version) | sha256sum | cut -c1-12
}

check_disk() { # VENV: before unpacking, the release (and VENV, when it must be made) fits on the disk of ROOT
    local unpacked venv_mib=0 live_venv free need
    unpacked=$(($(gzip -dc "$bundle" | wc -c) / 1048576 + 1))
    if [[ ! -f $1/.complete ]]; then
        # A new virtualenv takes about what the live one does.
        live_venv=$(readlink -e "$CURRENT/app/.venv" 2>/dev/null || true)
        if [[ -n $live_venv ]]; then venv_mib=$(du -sm "$live_venv" | cut -f1); else venv_mib=$NEW_VENV_MIB; fi
    fi
    free=$(df -m --output=avail "$RELEASES" | tail -1 | tr -d ' ')
    need=$((unpacked + venv_mib + DISK_MARGIN_MIB))
    if ((need > free)); then
        fail "release $release_id: the disk holding $ROOT has $free MiB free, and this release needs about" \
            "$need MiB (the release $unpacked MiB, a new virtualenv $venv_mib MiB, $DISK_MARGIN_MIB MiB to spare)." \
            "Free some space (sudo journalctl --vacuum-size=100M; old backups in $BACKUPS) or choose a larger" \
            "size; nothing was unpacked and the live release keeps serving"
    fi
}

show_logs() { # [-f] [-n LINES]: the site's requests (with their ids) and nginx's errors, then the app's and nginx's journal
    local follow=0 lines=50 usage="usage: deploy.sh logs [-f] [-n LINES]" file
    while (($#)); do
        case $1 in
            -f | --follow) follow=1 ;;
            -n | --lines)
                [[ ${2:-} =~ ^[0-9]+$ ]] || fail "$usage"
                lines=$2
                shift
                ;;
            *) fail "$usage" ;;
        esac
        shift
    done
    local files=("$ACCESS_LOG" /var/log/nginx/error.log)
    local units=(-u "$SERVICE" -u "$SOCKET" -u "$CANDIDATE.service" -u nginx.service -u "$BACKUP_UNIT.service"
        -u "$RENEW_UNIT.service")
    if ((follow)); then
        # All at once, each file's lines saying where they come from; nginx writes its access log every 2 s.
        for file in "${files[@]}"; do
            tail -n "$lines" -F "$file" 2>/dev/null | sed -u "s|^|$file: |" &
        done
        trap 'kill $(jobs -p) 2>/dev/null' EXIT
        journalctl --no-pager --output=short-iso --lines="$lines" --follow "${units[@]}"
    else
        echo "== $ACCESS_LOG: the last $lines requests (id= is the request id the app gets as X-Request-ID)"
        tail -n "$lines" "$ACCESS_LOG" 2>/dev/null || echo "(none yet)"
        echo "== /var/log/nginx/error.log: the last $lines lines"
        tail -n "$lines" /var/log/nginx/error.log 2>/dev/null || echo "(none yet)"
        echo "== the journal of $SERVICE, nginx and the deploy's units: the last $lines lines (journalctl ${units[*]})"
        journalctl --no-pager --output=short-iso --lines="$lines" "${units[@]}"
    fi
}

newest_backup() { # the newest backup's file, or nothing
    find "$BACKUPS" -maxdepth 1 -name '*.tar.gz' 2>/dev/null | sort | tail -n 1
}

take_backup() { # the state directory backed up now, by the timer's own service; prints the backup's name
    [[ -f /etc/systemd/system/$BACKUP_UNIT.service ]] ||
        fail "backups are off on this server (backupDays is 0, or no release has been deployed)"
    if ! systemctl start "$BACKUP_UNIT.service"; then
        journalctl -u "$BACKUP_UNIT.service" -n 20 --no-pager >&2 || true
        fail "the backup of $STATE_DIR failed (output above)"
    fi
    basename "$(newest_backup)" .tar.gz
}

restore_state() { # [BACKUP]: the newest backup, or BACKUP (a name that `ls BACKUPS` shows), back into the state directory
    local archive name before
    if [[ -z ${1:-} ]]; then
        archive=$(newest_backup)
        [[ -n $archive ]] || fail "no backup in $BACKUPS to restore"
    else
        archive=$BACKUPS/${1%.tar.gz}.tar.gz
        [[ $1 != */* && -f $archive ]] ||
            fail "no backup '$1' in $BACKUPS; backups: $(find "$BACKUPS" -maxdepth 1 -name '*.tar.gz' -printf '%f ' 2>/dev/null)"
    fi
    name=$(basename "$archive" .tar.gz)
    tar -tzf "$archive" >/dev/null || fail "the backup $archive cannot be read; nothing has changed"
    log "backing up the state as it is now, before restoring"
    before=$(take_backup)
    log "restoring $name into $STATE_DIR; the app stops meanwhile"
    stop_candidate
    systemctl stop "$SOCKET" "$SERVICE"
    find "$STATE_DIR" -mindepth 1 -maxdepth 1 ! -name lost+found -exec rm -rf {} +
    tar -xzf "$archive" -C "$STATE_DIR" --no-same-owner
    find "$STATE_DIR" -mindepth 1 ! -path "$STATE_DIR/lost+found" -exec chown -h "$APP_USER:$APP_USER" {} +
    chown "$APP_USER:$APP_USER" "$STATE_DIR"
    chmod 0750 "$STATE_DIR"
    systemctl start "$SOCKET"
    wait_healthy live || fail "after restoring $name, GET $HEALTH_PATH does not answer 2xx;" \
        "the state as it was before the restore is the backup $before"
    log "restored $name; the state before it is the backup $before"
    echo "$name"
}

case ${1:-} in
    logs)
        shift
        show_logs "$@"
        exit 0
        ;;
    backup)
        [[ $# -eq 1 ]] || fail "usage: deploy.sh backup"
        take_backup
        exit 0
        ;;
esac

if [[ ${1:-} == run ]]; then
    shift
    [[ ${1:-} != -- ]] || shift
    [[ $# -ge 1 ]] || fail "usage: deploy.sh run [--] COMMAND [ARGS...]"
    live=$(readlink "$CURRENT") || fail "no release is live yet: deploy one first"
    status=0
    run_in_release "$live" "$@" || status=$?
    exit "$status"
fi

# One deploy at a time; a second one waits for the first.
exec 9>"/run/lock/$APP_NAME-deploy.lock"
flock --wait 600 9 || fail "another deploy has held the lock for 10 minutes"

# Whether nginx serves the site over HTTPS now.
TLS_ACTIVE=0
if grep -q '^ *listen 443' "$NGINX_SITE" 2>/dev/null; then TLS_ACTIVE=1; fi

if [[ ${1:-} == restore ]]; then
    [[ $# -le 2 ]] || fail "usage: deploy.sh restore [BACKUP]"
    restore_state "${2:-}"
    exit 0
fi

if [[ ${1:-} == rollback ]]; then
    [[ $# -le 2 ]] || fail "usage: deploy.sh rollback [RELEASE_ID]"
    if [[ $# -eq 2 ]]; then
        target=$RELEASES/$2
    else
        [[ -f $ROOT/previous ]] || fail "no previous release is recorded"
        target=$(cat "$ROOT/previous")
    fi
    [[ -d $target ]] || fail "release $(basename "$target") is not on this server; releases: $(ls "$RELEASES")"
    activate "$target"
    log "rolled back to release $(basename "$target")"
    basename "$target"
    exit 0
fi

if [[ ${1:-} == --skip-release-command ]]; then
    SKIP_RELEASE_COMMAND=1
    shift
fi
readonly SKIP_RELEASE_COMMAND
[[ $# -eq 2 || $# -eq 3 ]] ||
    fail "usage: deploy.sh [--skip-release-command] RELEASE_ID BUNDLE [PUBLIC_IPV4], or deploy.sh rollback [RELEASE_ID]"
release_id=$1
bundle=$2
[[ $release_id =~ ^[0-9a-f]{12}$ ]] || fail "release id '$release_id' is not 12 hex digits"
[[ -f $bundle ]] || fail "bundle $bundle does not exist"
[[ $(sha256sum "$bundle" | cut -c1-12) == "$release_id" ]] || fail "bundle $bundle does not match release $release_id"
if [[ $# -eq 3 ]]; then
    [[ $3 =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || fail "public address '$3' is not an IPv4 address"
    install -d -m 0755 "$ROOT"
    printf '%s\n' "$3" >"$ROOT/public-ipv4"
fi
PUBLIC_IPV4=$(cat "$ROOT/public-ipv4" 2>/dev/null) || fail "no public address given, and none recorded"
readonly PUBLIC_IPV4

ensure_certificate
ensure_state_volume

# The environment file: root-owned, readable by the app's group only.
install -d -m 0750 -o root -g "$APP_USER" "$CONFIG_DIR"
# Empty stdin (a terminal, /dev/null) keeps the environment the server has.
env_changed=0
if [[ ! -t 0 ]]; then
    env_tmp=$(mktemp "$CONFIG_DIR/.env.XXXXXX")
    cat >"$env_tmp"
    if [[ ! -s $env_tmp ]] || cmp -s "$env_tmp" "$ENV_FILE"; then
        rm -f "$env_tmp"
    else
        chown "root:$APP_USER" "$env_tmp"
        chmod 0640 "$env_tmp"
        mv -f "$env_tmp" "$ENV_FILE"
        env_changed=1
    fi
fi

release_dir=$RELEASES/$release_id
if [[ ! -d $release_dir ]]; then
    log "unpacking release $release_id"
    install -d -m 0755 "$RELEASES" "$ROOT/venvs"
    staging=$(mktemp -d "$RELEASES/.staging.XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    # Releases with the same dependencies share one virtualenv; the app's own code stays in the release.
    tar -xzf "$bundle" -C "$staging" --no-same-owner --no-same-permissions deps
    venv=$ROOT/venvs/$(venv_key_of "$staging/deps")
    check_disk "$venv"
    tar -xzf "$bundle" -C "$staging" --no-same-owner --no-same-permissions
    chmod -R u=rwX,go=rX "$staging"
    chmod 0755 "$staging"
    if [[ ! -f $venv/.complete ]]; then
        wait_for_apt
        rm -rf "$venv"
        install_dependencies "$venv" "$staging/deps"
        touch "$venv/.complete"
    else
        log "reusing $venv"
    fi
    ln -sfn "$venv" "$staging/app/.venv"
    link_state "$staging"
    store_static_files "$staging"
    {
        printf 'APP_VERSION=%s\n' "$release_id"
        printf 'PATH=%s\n' "$release_dir/app/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        printf 'PYTHONPATH=%s\n' "$release_dir/app${IMPORT_ROOT:+/$IMPORT_ROOT}"
        # The release's own Gunicorn settings (its static URLs); a release from before them has none.
        printf 'GUNICORN_CMD_ARGS=--config=%s\n' "$release_dir/server/gunicorn.conf.py"
        if [[ -n $SQLITE_URL ]]; then printf 'DATABASE_URL=%s\n' "$SQLITE_URL"; fi
    } >"$staging/release.env"
    mv -T "$staging" "$release_dir"
    trap - EXIT
fi

# Gunicorn loads the app with this release's code and the real environment, as the app's user.
log "checking that $WSGI_TARGET loads"
release_properties "$release_dir"
systemd-run --quiet --wait --pipe --collect "${RELEASE_PROPERTIES[@]}" \
    "$release_dir/app/.venv/bin/gunicorn" --check-config --workers "$WORKERS" "$WSGI_TARGET" </dev/null >&2 ||
    fail "release $release_id: gunicorn --check-config $WSGI_TARGET failed (output above)"

live_release=$(readlink "$CURRENT" || true)
live_release=${live_release##*/}
[[ $live_release != "$release_id" ]] || live_release=
run_release_command "$release_dir" "$live_release"

check_memory

# Server configuration shipped with the release; nginx only takes it if it parses.
config_changed=0
install_if_changed() { # SOURCE TARGET: installed, and the app's units reloaded and the app restarted for it
    if installed "$1" "$2"; then config_changed=1; fi
}
install_if_changed "$release_dir/server/$SERVICE" "/etc/systemd/system/$SERVICE"
install_if_changed "$release_dir/server/$SOCKET" "/etc/systemd/system/$SOCKET"
if [[ $HTTPS == 1 ]]; then
    install_if_changed "$release_dir/server/$RENEW_UNIT.service" "/etc/systemd/system/$RENEW_UNIT.service"
    install_if_changed "$release_dir/server/$RENEW_UNIT.timer" "/etc/systemd/system/$RENEW_UNIT.timer"
elif [[ -f /etc/systemd/system/$RENEW_UNIT.timer ]]; then
    systemctl disable --quiet --now "$RENEW_UNIT.timer"
    rm -f "/etc/systemd/system/$RENEW_UNIT.service" "/etc/systemd/system/$RENEW_UNIT.timer"
    config_changed=1
fi
# Units beside the app's (its backups): a change reloads systemd, and restarts nothing of the app.
units_changed=0
if ((BACKUP_DAYS > 0)); then
    install -d -m 0710 -o root -g "$APP_USER" "$BACKUPS"
    install -d -m 0700 -o "$APP_USER" -g "$APP_USER" "$BACKUP_INCOMING"
    # Readable by the app's user, who runs the script, whatever the umask of the deploy's session.
    install -d -m 0755 "$(dirname "$BACKUP_SCRIPT")"
    for unit in "$BACKUP_UNIT.service" "$BACKUP_UNIT.timer"; do
        if installed "$release_dir/server/$unit" "/etc/systemd/system/$unit"; then units_changed=1; fi
    done
    installed "$release_dir/server/state-backup.py" "$BACKUP_SCRIPT" || true
elif [[ -f /etc/systemd/system/$BACKUP_UNIT.timer ]]; then
    # Backups turned off: no more are taken; those already taken stay in BACKUPS.
    systemctl disable --quiet --now "$BACKUP_UNIT.timer"
    rm -f "/etc/systemd/system/$BACKUP_UNIT.service" "/etc/systemd/system/$BACKUP_UNIT.timer" "$BACKUP_SCRIPT"
    units_changed=1
fi
# The journal on disk and bounded (written at first boot too).
if installed "$release_dir/server/journald.conf" "$JOURNALD_DROP_IN"; then
    systemctl restart systemd-journald
fi
nginx_sandbox_changed=0
if installed "$release_dir/server/nginx-sandbox.conf" "$NGINX_DROP_IN"; then
    nginx_sandbox_changed=1
    config_changed=1
fi
if ((config_changed || units_changed)); then
    systemctl daemon-reload
fi
if [[ $nginx_sandbox_changed == 1 ]]; then
    systemctl restart nginx
fi
select_site "$release_dir"
if [[ $HTTPS == 1 ]]; then
    systemctl enable --quiet --now "$RENEW_UNIT.timer"
fi
if ((BACKUP_DAYS > 0)); then
    systemctl enable --quiet --now "$BACKUP_UNIT.timer"
fi
systemctl enable --quiet "$SOCKET" "$SERVICE"
systemctl start "$SOCKET"

previous=$(readlink "$CURRENT" || true)
if [[ $previous == "$release_dir" && $config_changed == 0 && $env_changed == 0 ]] &&
    systemctl is-active --quiet "$SERVICE" && health live; then
    log "release $release_id is already live and healthy; nothing to change"
    report_outcome "$release_id"
    exit 0
fi
activate "$release_dir"

# Keep the newest releases (and the live one); drop virtualenvs no release uses.
live=$(readlink "$CURRENT")
mapfile -t old_releases < <(find "$RELEASES" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %p\n' |
    sort -rn | cut -d' ' -f2- | tail -n +"$((KEEP + 1))")
for old in "${old_releases[@]}"; do
    [[ $old == "$live" || $old == "$(cat "$ROOT/previous" 2>/dev/null)" ]] || rm -rf "$old"
done
# Keep the stored static files that a kept release links to; a page of any of them finds its files.
kept_digests=$(cat "$RELEASES"/*/server/static-manifest 2>/dev/null | cut -d' ' -f1 | sort -u)
for stored in "$ASSETS"/*; do
    [[ -d $stored ]] || continue
    grep -qx "${stored##*/}" <<<"$kept_digests" || rm -rf "$stored"
done
for venv in "$ROOT"/venvs/*; do
    [[ -d $venv ]] || continue
    used=0
    for link in "$RELEASES"/*/app/.venv; do
        if [[ $(readlink "$link") == "$venv" ]]; then used=1; fi
    done
    [[ $used == 1 ]] || rm -rf "$venv"
done

log "release $release_id is live at $(public_url)"
report_outcome "$release_id"
