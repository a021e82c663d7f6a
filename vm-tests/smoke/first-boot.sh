#!/bin/bash
# smoke: what the daemon's first-boot hook does, roughly: phone home with IP + uuid
set -eu
ip=$(ip -4 -o addr show scope global | awk '{print $4; exit}')
uuid=$(cat /sys/class/dmi/id/product_uuid)
curl -fsS -X POST -H 'Content-Type: application/json' \
    -d "{\"ip\":\"${ip%/*}\",\"uuid\":\"$uuid\",\"hostname\":\"$(hostname)\"}" \
    "http://SMOKE_SERVER/cgi-bin/phone-home"
