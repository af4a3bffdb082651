// One-way TLS: the client verifies certmq's server certificate with the CA file, and
// authenticates with Signature credentials (an AccessKey pair and the instance id).
//
//   node one_way.mjs --ca-file data/server-ca/ca.pem \
//     --access-key-id LTAI... --access-key-secret ... --instance-id mqtt-local-...

import { readFileSync } from 'node:fs'
import { parseOptions, run } from './sample.mjs'

const options = parseOptions('one_way.mjs', { mutual: false })

await run(options, () => ({
  // Trust only the CA that signed the broker's certificate.
  ca: [readFileSync(options.caFile)]
}), 'one-way TLS')
