// What the two MQTT.js samples share: their options, the Signature credentials of ApsaraMQ's
// conventions, and one round trip (connect, subscribe, publish, wait for the message to come back).
// one_way.mjs and mutual.mjs differ only in the TLS options they hand to run().

import { createHmac } from 'node:crypto'
import { parseArgs } from 'node:util'
import mqtt from 'mqtt'

const CONNACK_REFUSALS = {
  1: 'unacceptable protocol version',
  2: 'client identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized'
}

// Node.js error codes of a failed certificate check on the client side.
const VERIFY_ERRORS = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID'
])

// Every option is a flag or an environment variable (the flag wins), as in every certmq sample.
const OPTIONS = [
  ['host', 'MQTT_HOST', 'broker host name, as written in its certificate', 'localhost'],
  ['port', 'MQTT_PORT', 'MQTT over TLS port', '8883'],
  ['ca-file', 'MQTT_CA_FILE', "CA certificate that signed the broker's certificate (PEM)"],
  ['chain-file', 'MQTT_CHAIN_FILE', 'device certificate followed by its CA certificate (PEM)', undefined, 'mutual'],
  ['key-file', 'MQTT_KEY_FILE', "the device certificate's private key (PEM)", undefined, 'mutual'],
  ['access-key-id', 'MQTT_ACCESS_KEY_ID', 'AccessKeyId for Signature credentials'],
  ['access-key-secret', 'MQTT_ACCESS_KEY_SECRET', 'AccessKeySecret for Signature credentials'],
  ['instance-id', 'MQTT_INSTANCE_ID', 'instance id for Signature credentials'],
  ['client-id', 'MQTT_CLIENT_ID', 'MQTT client id, GroupID@@@DeviceID', 'GID_demo@@@device-0001'],
  ['topic', 'MQTT_TOPIC', 'topic to subscribe and publish to', 'demo/hello'],
  ['timeout', 'MQTT_TIMEOUT', 'seconds to wait for the whole round trip', '10']
]

export class SampleError extends Error {}

function usageError (message) {
  console.error(`error: ${message} (--help lists the options)`)
  process.exit(2)
}

export function parseOptions (program, { mutual }) {
  const known = OPTIONS.filter(([, , , , only]) => !only || mutual)
  let parsed
  try {
    parsed = parseArgs({
      options: Object.fromEntries([
        ['help', { type: 'boolean', short: 'h' }],
        ...known.map(([name]) => [name, { type: 'string' }])
      ])
    }).values
  } catch (error) {
    usageError(error.message)
  }
  if (parsed.help) {
    console.log(`usage: node ${program} [options]\n`)
    console.log('Connect to certmq over TLS, subscribe to a topic, publish one message to it and wait for it to come back.\n')
    for (const [name, variable, help, fallback] of known) {
      const shown = fallback ? ` (default: ${fallback})` : ''
      console.log(`  --${name} ${variable}`.padEnd(46) + `${help}${shown}`)
    }
    process.exit(0)
  }
  const value = (name, variable, fallback) => parsed[name] || process.env[variable] || fallback
  const options = Object.fromEntries(
    known.map(([name, variable, , fallback]) => [name, value(name, variable, fallback)])
  )
  const required = [['ca-file', 'MQTT_CA_FILE']]
  if (mutual) required.push(['chain-file', 'MQTT_CHAIN_FILE'], ['key-file', 'MQTT_KEY_FILE'])
  for (const [name, variable] of required) {
    if (!options[name]) usageError(`--${name} (or ${variable}) is required`)
  }
  const credentials = [options['access-key-id'], options['access-key-secret'], options['instance-id']]
  if (credentials.some(Boolean) && !credentials.every(Boolean)) {
    usageError('--access-key-id, --access-key-secret and --instance-id go together')
  }
  const port = Number(options.port)
  const timeout = Number(options.timeout)
  if (!Number.isInteger(port) || !(timeout > 0)) usageError('--port and --timeout are numbers')
  return {
    host: options.host,
    port,
    caFile: options['ca-file'],
    chainFile: options['chain-file'],
    keyFile: options['key-file'],
    accessKeyId: options['access-key-id'],
    accessKeySecret: options['access-key-secret'],
    instanceId: options['instance-id'],
    clientId: options['client-id'],
    topic: options.topic,
    timeout
  }
}

// ApsaraMQ's Signature mode: Base64(HMAC-SHA1(key=AccessKeySecret, msg=ClientId)).
export function signaturePassword (accessKeySecret, clientId) {
  return createHmac('sha1', accessKeySecret).update(clientId, 'utf8').digest('base64')
}

// Runs the round trip and exits: 0 when the message came back, 1 with a one-line error otherwise.
export async function run (options, makeTls, mode) {
  try {
    await roundTrip(options, makeTls, mode)
    process.exit(0)
  } catch (error) {
    const message = error instanceof SampleError ? error.message : `${error.code || error.name}: ${error.message}`
    console.error(`error: ${message}`)
    process.exit(1)
  }
}

function roundTrip (options, makeTls, mode) {
  let tls
  try {
    tls = makeTls()
  } catch (error) {
    throw new SampleError(`cannot load the TLS files: ${error.message}`)
  }
  const connectOptions = {
    protocol: 'mqtts',
    host: options.host,
    port: options.port,
    protocolVersion: 4, // MQTT 3.1.1
    clientId: options.clientId,
    clean: true,
    keepalive: 30,
    reconnectPeriod: 0, // report a failure instead of retrying
    connectTimeout: options.timeout * 1000,
    rejectUnauthorized: true, // check the broker's certificate chain and host name
    minVersion: 'TLSv1.2',
    ...tls
  }
  if (options.accessKeyId) {
    connectOptions.username = `Signature|${options.accessKeyId}|${options.instanceId}`
    connectOptions.password = signaturePassword(options.accessKeySecret, options.clientId)
  }
  const address = `${options.host}:${options.port}`
  const payload = `hello from the JavaScript sample (${mode})`

  return new Promise((resolve, reject) => {
    let connected = false
    let finished = false
    const client = mqtt.connect(connectOptions)
    const finish = (error) => {
      if (finished) return
      finished = true
      clearTimeout(timer)
      client.end(true)
      if (error) reject(error)
      else resolve()
    }
    const timer = setTimeout(() => {
      const waiting = connected ? 'the message to come back' : 'the broker to accept the connection'
      finish(new SampleError(`timed out after ${options.timeout} s waiting for ${waiting}`))
    }, options.timeout * 1000)

    client.on('connect', () => {
      connected = true
      console.log(`connected to ${address} as ${options.clientId} (${mode})`)
      client.subscribe(options.topic, { qos: 1 }, (error, granted) => {
        if (error || granted.some((grant) => grant.qos === 128)) {
          finish(new SampleError(`the broker refused the subscription to ${options.topic}`))
          return
        }
        console.log(`subscribed to ${options.topic}`)
        client.publish(options.topic, payload, { qos: 1 }, (error) => {
          if (error) finish(new SampleError(`publishing failed: ${error.message}`))
        })
        console.log(`published to ${options.topic}: ${payload}`)
      })
    })
    client.on('message', (topic, message) => {
      const text = message.toString()
      console.log(`received on ${topic}: ${text}`)
      if (text === payload) finish()
    })
    client.on('error', (error) => finish(describe(error, address, mode, options.timeout)))
    client.on('close', () => {
      if (connected) finish(new SampleError('the broker closed the connection'))
      else finish(new SampleError(closedBeforeConnack(mode)))
    })
  })
}

function describe (error, address, mode, timeout) {
  if (error.message === 'connack timeout') {
    return new SampleError(`timed out after ${timeout} s waiting for the broker to accept the connection`)
  }
  if (typeof error.code === 'number' && CONNACK_REFUSALS[error.code]) {
    const hint = {
      4: ': check the AccessKey pair and the instance id',
      5: ': `certmq decisions --limit 5` on the broker says why'
    }[error.code] || ''
    return new SampleError(
      `the broker refused the connection: ${CONNACK_REFUSALS[error.code]} (CONNACK return code ${error.code})${hint}`
    )
  }
  if (error.code === 'ECONNREFUSED') {
    return new SampleError(`cannot connect to ${address}: connection refused (is certmq running?)`)
  }
  if (error.code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new SampleError(
      `TLS handshake with ${address} failed: ${(error.reason || error.message).replace(/:\s*$/, '')} (connect with a --host the broker's certificate names, e.g. localhost)`
    )
  }
  if (VERIFY_ERRORS.has(error.code)) {
    return new SampleError(
      `TLS handshake with ${address} failed: ${error.message} (is --ca-file the CA that signed the broker's certificate, data/server-ca/ca.pem?)`
    )
  }
  if (mode !== 'mutual TLS' && /certificate required/i.test(error.reason || '')) {
    // The broker's alert: it is in mutual mode and this client has no certificate to show.
    return new SampleError(closedBeforeConnack(mode))
  }
  if (error.code && error.code.startsWith('ERR_SSL')) {
    const hint = mode === 'mutual TLS' ? ' (the broker may have refused the device certificate: is its CA registered?)' : ''
    // OpenSSL's reason ("tlsv1 alert unknown ca") is the useful part of its multi-line message.
    return new SampleError(`TLS handshake with ${address} failed: ${error.reason || error.message.trim()}${hint}`)
  }
  return new SampleError(`cannot connect to ${address}: ${error.code ? `${error.code}: ` : ''}${error.message}`)
}

function closedBeforeConnack (mode) {
  if (mode === 'mutual TLS') {
    return 'the broker closed the connection before accepting it: it did not accept the device certificate ' +
      '(is its CA registered?); `certmq decisions --limit 5` on the broker says why'
  }
  return 'the broker closed the connection before accepting it: ' +
    'if it is in mutual mode, it wants a device certificate (use mutual.mjs)'
}
