#!/bin/sh
# Provisioning first-boot script for {{ host|shell_quote }}.
#
# Rendered by the provisioning daemon and run exactly once on the freshly
# installed system by proxmox-first-boot (ordering: network-online). It
# reports this machine's primary IP address and hardware id to the daemon's
# phone-home endpoint, retrying with backoff for about
# {{ deadline_secs }} seconds, and exits non-zero if the report was never
# accepted. The token travels in an Authorization header, never in the URL.

set -u

HOST={{ host|shell_quote }}
PHONE_HOME_URL={{ phone_home_url|shell_quote }}
SERVER_HOST={{ server_host|shell_quote }}
TOKEN={{ token|shell_quote }}
DEADLINE_SECS={{ deadline_secs }}
TAG=provisioning-first-boot

# Messages go to stderr (the journal, under systemd) and to the console.
log() {
    printf '%s: %s\n' "$TAG" "$*" >&2
    if [ -w /dev/console ]; then
        printf '%s: %s\n' "$TAG" "$*" >/dev/console 2>/dev/null || true
    fi
}

# The source address this machine uses to reach the daemon, else towards a
# public address, else the first address "hostname -I" lists. "ip route get"
# only consults the routing table; it sends nothing.
primary_ip() {
    if command -v ip >/dev/null 2>&1; then
        target=$SERVER_HOST
        if command -v getent >/dev/null 2>&1; then
            resolved=$(getent ahosts "$SERVER_HOST" 2>/dev/null | awk 'NR == 1 { print $1 }')
            if [ -n "$resolved" ]; then
                target=$resolved
            fi
        fi
        for dest in "$target" 192.0.2.1 2001:db8::1; do
            addr=$(ip route get "$dest" 2>/dev/null | sed -n 's/.* src \([^ ]*\).*/\1/p' | head -n 1)
            if [ -n "$addr" ]; then
                printf '%s\n' "$addr"
                return 0
            fi
        done
    fi
    if command -v hostname >/dev/null 2>&1; then
        addr=$(hostname -I 2>/dev/null | awk '{ print $1 }')
        if [ -n "$addr" ]; then
            printf '%s\n' "$addr"
            return 0
        fi
    fi
    return 1
}

# The DMI system UUID (what the installer reported as dmi.system.uuid), else
# the systemd machine id.
hardware_id() {
    for file in /sys/class/dmi/id/product_uuid /etc/machine-id; do
        if [ -r "$file" ]; then
            id=$(tr -d ' \n' <"$file" | tr 'A-F' 'a-f')
            if [ -n "$id" ]; then
                printf '%s\n' "$id"
                return 0
            fi
        fi
    done
    return 1
}

# Keeps only characters that need no JSON escaping in these two values.
json_safe() {
    printf '%s' "$1" | tr -cd '0-9A-Za-z.:%_-'
}

IP=$(primary_ip) || IP=""
HARDWARE_ID=$(hardware_id) || HARDWARE_ID=""
if [ -z "$IP" ]; then
    log "warning: no IP address found, reporting an empty one"
fi
if [ -z "$HARDWARE_ID" ]; then
    log "warning: no hardware id found (no DMI UUID, no /etc/machine-id)"
fi
BODY=$(printf '{"ip":"%s","hardware_id":"%s"}' "$(json_safe "$IP")" "$(json_safe "$HARDWARE_ID")")

# The header lives in a private file so the token is not on a command line.
umask 077
HEADER_FILE=$(mktemp) || {
    log "error: cannot create a temporary file"
    exit 1
}
trap 'rm -f "$HEADER_FILE"' EXIT
printf 'Authorization: Bearer %s\n' "$TOKEN" >"$HEADER_FILE"

# One attempt. Prints the HTTP status (000 when there was no response).
post_once() {
    if command -v curl >/dev/null 2>&1; then
        curl -sS -o /dev/null -w '%{http_code}' --max-time 30 \
            -X POST -H 'Content-Type: application/json' -H "@$HEADER_FILE" \
            --data-binary "$BODY" "$PHONE_HOME_URL" 2>/dev/null || true
    elif command -v wget >/dev/null 2>&1; then
        # wget takes headers only as arguments. Its -T crashes some busybox
        # builds, so the time limit comes from timeout(1) where there is one.
        limit=""
        if command -v timeout >/dev/null 2>&1; then
            limit="timeout 30"
        fi
        # shellcheck disable=SC2086 # $limit is empty or two words
        if $limit wget -q -O /dev/null --header 'Content-Type: application/json' \
            --header "Authorization: Bearer $TOKEN" \
            --post-data "$BODY" "$PHONE_HOME_URL" 2>/dev/null; then
            printf '200'
        else
            printf '000'
        fi
    else
        printf 'none'
    fi
}

log "reporting ip=${IP:-none} hardware_id=${HARDWARE_ID:-none} for $HOST to $PHONE_HOME_URL"
waited=0
delay=5
attempt=1
while :; do
    status=$(post_once)
    case $status in
    none)
        log "error: neither curl nor wget is installed, cannot phone home"
        exit 1
        ;;
    2??)
        log "phone-home accepted (HTTP $status) after $attempt attempt(s)"
        exit 0
        ;;
    408 | 425 | 429 | 5?? | 000)
        log "phone-home attempt $attempt failed (HTTP $status), retrying in ${delay}s"
        ;;
    *)
        log "error: phone-home refused (HTTP $status), giving up"
        exit 1
        ;;
    esac
    if [ "$waited" -ge "$DEADLINE_SECS" ]; then
        log "error: phone-home not accepted after $attempt attempts (${waited}s), giving up"
        exit 1
    fi
    sleep "$delay"
    waited=$((waited + delay))
    attempt=$((attempt + 1))
    delay=$((delay * 2))
    if [ "$delay" -gt 60 ]; then
        delay=60
    fi
done
