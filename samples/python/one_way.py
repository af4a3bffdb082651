#!/usr/bin/env python3
"""One-way TLS: the client verifies certmq's server certificate with the CA file, and
authenticates with Signature credentials (an AccessKey pair and the instance id).

    python3 one_way.py --ca-file data/server-ca/ca.pem \
        --access-key-id LTAI... --access-key-secret ... --instance-id mqtt-local-...
"""

from __future__ import annotations

import ssl

from sample import Options, parse_options, run


def tls_context(options: Options) -> ssl.SSLContext:
    # Trust only the CA that signed the broker's certificate; check the chain and the host name.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=options.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


if __name__ == "__main__":
    options = parse_options("one_way.py", mutual=False)
    run(options, lambda: tls_context(options), "one-way TLS")
