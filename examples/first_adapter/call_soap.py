"""Call getLicence with zeep through the consumer security server.

Usage: python call_soap.py ADAPTER_URL CONSUMER_URL (the two URLs `python -m adapters.sdk try`
prints). The WSDL comes from the adapter; the request goes to the consumer server.
"""

import sys

import zeep

adapter_url, consumer_url = sys.argv[1:3]
client = zeep.Client(f"{adapter_url}/soap?wsdl")
licences = client.create_service(
    "{http://licences.mot.gov.ps/v1}DrivingLicencesBinding", f"{consumer_url}/"
)
ids = {"xRoadInstance": "PS", "memberClass": "GOV"}
answer = licences.getLicence(
    nationalId="401409669",
    _soapheaders={
        "client": {**ids, "objectType": "SUBSYSTEM", "memberCode": "POLICE",
                   "subsystemCode": "traffic"},
        "service": {**ids, "objectType": "SERVICE", "memberCode": "MOT",
                    "subsystemCode": "licences", "serviceCode": "getLicence"},
        "id": "police-check-1", "protocolVersion": "4.0", "purpose": "traffic-control",
    },
)  # fmt: skip
print(answer.body)
print("requestHash:", answer.header.requestHash)
