"""Sans-IO protocol core: canonical bytes, JWS, the signed request and response documents."""
