#!/usr/bin/env bash
# Real exchanges against a running example federation, with curl, as any X-Road REST client would.
#
#   exchange demo --serve --state-dir /tmp/ps &     # wait for "Serving"
#   examples/try-exchanges.sh /tmp/ps
#
# Needs curl and python3 (to read endpoints.json). Prints each answer; exits non-zero when an
# answer is not the expected one.
set -euo pipefail
state="${1:?usage: $0 STATE_DIR}"
ep="$state/endpoints.json"
get() { python3 -c "import json,sys; d=json.load(open('$ep')); print(eval(sys.argv[1], {'d': d}))" "$1"; }

window=$(get 'd["servers"]["PS/GOV/PALPOST"]["consumer_url"]')
health=$(get 'd["servers"]["PS/GOV/MOH"]["consumer_url"]')
finance=$(get 'd["servers"]["PS/GOV/MOF"]["consumer_url"]')
nid=$(get 'd["sample_national_ids"][0]')
svc="r1/PS/GOV/MOI/population-registry/persons"

check() {  # check EXPECTED_STATUS LABEL curl-args...
  local expected="$1" label="$2"; shift 2
  local out status
  out=$(curl -sS -w '\n%{http_code}' "$@")
  status="${out##*$'\n'}"
  echo "== $label -> $status"
  echo "${out%$'\n'*}"
  echo
  [ "$status" = "$expected" ] || { echo "expected $expected" >&2; exit 1; }
}

check 200 "post-office window, purpose citizen-service: name, ID and address only" \
  -H 'X-Road-Client: PS/GOV/PALPOST/unified-window' -H 'X-Road-Purpose: citizen-service' \
  -H 'X-Road-UserId: PS-clerk-biddu-01' "$window/$svc/$nid"
check 200 "Health, purpose patient-care: the family" \
  -H 'X-Road-Client: PS/GOV/MOH/health-records' -H 'X-Road-Purpose: patient-care' \
  "$health/$svc/$nid/family"
check 403 "Finance's grant has expired" \
  -H 'X-Road-Client: PS/GOV/MOF/payments' -H 'X-Road-Purpose: fee-collection' \
  "$finance/$svc/$nid"
check 400 "missing X-Road-Client header" "$window/$svc/$nid"

# the same registry over SOAP (X-Road message protocol 4.0)
bash "$(dirname "$0")/soap/try-soap.sh" "$state"
