#!/usr/bin/env bash
# SOAP (X-Road message protocol 4.0) against a running example federation, with curl, as any
# X-Road 4.0 information system would: POST the envelope to the consumer security server.
#
#   exchange demo --serve --state-dir /tmp/ps &     # wait for "Serving"
#   examples/soap/try-soap.sh /tmp/ps
#
# getPerson.xml is the envelope; MESSAGE-ID and NATIONAL-ID are filled in here (an X-Road id is
# accepted once). Exits non-zero when an answer is not the expected one.
set -euo pipefail
state="${1:?usage: $0 STATE_DIR}"
here="$(cd "$(dirname "$0")" && pwd)"
ep="$state/endpoints.json"
get() { python3 -c "import json,sys; d=json.load(open('$ep')); print(eval(sys.argv[1], {'d': d}))" "$1"; }
window=$(get 'd["servers"]["PS/GOV/PALPOST"]["consumer_url"]')
nid=$(get 'd["sample_national_ids"][0]')

envelope() {  # envelope [sed-args...]: getPerson.xml with a fresh id and the sample person
  sed -e "s/MESSAGE-ID/$(python3 -c 'import uuid; print(uuid.uuid4())')/" \
      -e "s/NATIONAL-ID/$nid/" "$@" "$here/getPerson.xml"
}

check() {  # check EXPECTED_STATUS EXPECTED_TEXT LABEL [sed-args...]
  local expected="$1" text="$2" label="$3"; shift 3
  local out status
  out=$(envelope "$@" | curl -sS -w '\n%{http_code}' -X POST \
        -H 'Content-Type: text/xml; charset=utf-8' -H 'SOAPAction: ""' --data-binary @- "$window/")
  status="${out##*$'\n'}"
  echo "== $label -> $status"
  echo "${out%$'\n'*}"
  echo
  [ "$status" = "$expected" ] || { echo "expected $expected" >&2; exit 1; }
  [[ "$out" == *"$text"* ]] || { echo "expected $text in the answer" >&2; exit 1; }
}

check 200 "<xrd:requestHash algorithmId=" "getPerson over SOAP: the same fields as over REST"
check 500 "<faultcode>Server.ServerProxy.AccessDenied.PurposeNotAllowed</faultcode>" \
  "no purpose of use: a SOAP Fault" -e '/ext:purpose>/d'
check 500 "<faultcode>Client.InvalidBody</faultcode>" \
  "body element is not the service code" -e 's/pop:getPerson>/pop:getPersons>/g'

# a stock SOAP client (zeep) with the registry's WSDL; PYTHON is an interpreter that has zeep
echo "== zeep"
"${PYTHON:-python3}" "$here/zeep_call.py" "$state" "$nid"
