#!/usr/bin/env python3
"""Mutual TLS: the client verifies certmq's server certificate with the CA file, and presents
its device certificate chain (device certificate + CA certificate) and key. Signature
credentials are optional in mutual mode; when given, they must be valid.

    python3 mutual.py --ca-file data/server-ca/ca.pem \
        --chain-file device-0001/chain.pem --key-file device-0001/device.key
"""

from __future__ import annotations

import ssl

from sample import Options, parse_options, run


def tls_context(options: Options) -> ssl.SSLContext:
    # Trust only the CA that signed the broker's certificate; check the chain and the host name.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=options.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # What the device presents: its certificate followed by the CA that issued it, and its key.
    context.load_cert_chain(certfile=options.chain_file, keyfile=options.key_file)
    return context


if __name__ == "__main__":
    options = parse_options("mutual.py", mutual=True)
    run(options, lambda: tls_context(options), "mutual TLS")
