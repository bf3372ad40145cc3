"""getPerson through the post office's security server with zeep, a stock SOAP client.

    python examples/soap/zeep_call.py /tmp/ps 410689996

The WSDL is the registry's own; zeep sends the envelope to the consumer security server, which
signs, forwards, checks and logs it; the answer carries only the fields the grant releases.
"""

import json
import sys
import uuid

import zeep

state, national_id = sys.argv[1], sys.argv[2]
with open(f"{state}/endpoints.json") as f:
    endpoints = json.load(f)
consumer = endpoints["servers"]["PS/GOV/PALPOST"]["consumer_url"]
wsdl = endpoints["adapters"]["PS/GOV/MOI/population-registry/getPerson"]["wsdl_url"]

client = zeep.Client(wsdl)
registry = client.create_service(
    "{http://population.moi.gov.ps/v1}PopulationRegistryBinding", consumer + "/"
)
xroad_headers = {
    "client": {
        "objectType": "SUBSYSTEM",
        "xRoadInstance": "PS",
        "memberClass": "GOV",
        "memberCode": "PALPOST",
        "subsystemCode": "unified-window",
    },
    "service": {
        "objectType": "SERVICE",
        "xRoadInstance": "PS",
        "memberClass": "GOV",
        "memberCode": "MOI",
        "subsystemCode": "population-registry",
        "serviceCode": "getPerson",
    },
    "id": str(uuid.uuid4()),
    "userId": "PS-clerk-0042",
    "protocolVersion": "4.0",
    "purpose": "citizen-service",
}
answer = registry.getPerson(nationalId=national_id, _soapheaders=xroad_headers)
person = answer.body
print(person.national_id, person.name_en.full, person.address.locality)
print("date_of_birth released:", person.date_of_birth is not None)
print("requestHash:", answer.header.requestHash.algorithmId)
sys.exit(0 if person.national_id == national_id and person.date_of_birth is None else 1)
