// Mutual TLS: the client verifies certmq's server certificate with the CA file, and presents
// its device certificate chain (device certificate + CA certificate) and key. Signature
// credentials are optional in mutual mode; when given, they must be valid.
//
//   node mutual.mjs --ca-file data/server-ca/ca.pem \
//     --chain-file device-0001/chain.pem --key-file device-0001/device.key

import { readFileSync } from 'node:fs'
import { parseOptions, run } from './sample.mjs'

const options = parseOptions('mutual.mjs', { mutual: true })

await run(options, () => ({
  // Trust only the CA that signed the broker's certificate.
  ca: [readFileSync(options.caFile)],
  // What the device presents: its certificate followed by the CA that issued it, and its key.
  cert: readFileSync(options.chainFile),
  key: readFileSync(options.keyFile)
}), 'mutual TLS')
