// Connects to a broker with MQTT.js, subscribes, publishes at QoS 0, 1 and 2, and checks that every
// message comes back unchanged (on MQTT 5.0 with its user properties and content type).
// Prints one line per step; the last line is "ok ..." and the exit code 0 on success, or
// "FAIL ..." and exit code 1.
//
// node pubsub_check.mjs --url mqtts://localhost:8883 --ca ca.pem --protocol-version 5 --topic t/x

import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import mqtt from 'mqtt'

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    ca: { type: 'string' },
    'protocol-version': { type: 'string', default: '5' },
    topic: { type: 'string' },
    'client-id': { type: 'string', default: `mqttjs-${process.pid}-${Date.now()}` },
    timeout: { type: 'string', default: '15' }
  }
})

function fail (message) {
  console.log(`FAIL ${message}`)
  process.exit(1)
}

if (!args.url || !args.topic) fail('usage: --url URL --topic TOPIC [--ca FILE] [--protocol-version 4|5]')

const protocolVersion = Number(args['protocol-version'])
const timer = setTimeout(() => fail(`timed out after ${args.timeout}s`), Number(args.timeout) * 1000)

const options = {
  protocolVersion,
  clientId: args['client-id'],
  clean: true,
  reconnectPeriod: 0,
  connectTimeout: 5000,
  keepalive: 30
}
if (args.ca) {
  options.ca = [readFileSync(args.ca)]
  options.servername = 'localhost'
  options.rejectUnauthorized = true
}

async function main () {
  const client = await mqtt.connectAsync(args.url, options, false)
  console.log(`connected url=${args.url} protocol=${protocolVersion}`)

  const granted = await client.subscribeAsync(`${args.topic}/#`, { qos: 2 })
  console.log(`subscribed ${granted.map((grant) => `${grant.topic} qos=${grant.qos}`).join(', ')}`)
  if (granted.length !== 1 || granted[0].qos !== 2) fail(`unexpected SUBACK ${JSON.stringify(granted)}`)

  const expected = [0, 1, 2].map((qos) => ({
    topic: `${args.topic}/qos${qos}`,
    payload: `hello from MQTT.js at qos ${qos}`,
    qos
  }))
  const received = []
  const allReceived = new Promise((resolve) => {
    client.on('message', (topic, payload, packet) => {
      const properties = packet.properties || {}
      received.push({ topic, payload: payload.toString(), qos: packet.qos, properties })
      console.log(`received ${topic} qos=${packet.qos} payload=${payload.toString()}`)
      if (received.length === expected.length) resolve()
    })
  })

  for (const message of expected) {
    const publishOptions = { qos: message.qos }
    if (protocolVersion === 5) {
      publishOptions.properties = {
        contentType: 'text/plain',
        userProperties: { sender: 'mqtt.js', qos: String(message.qos) }
      }
    }
    await client.publishAsync(message.topic, message.payload, publishOptions)
    console.log(`published ${message.topic} qos=${message.qos}`)
  }
  await allReceived

  received.sort((a, b) => a.qos - b.qos)
  for (const [index, message] of expected.entries()) {
    const got = received[index]
    if (got.topic !== message.topic || got.payload !== message.payload || got.qos !== message.qos) {
      fail(`expected ${JSON.stringify(message)}, received ${JSON.stringify(got)}`)
    }
    if (protocolVersion === 5) {
      const user = got.properties.userProperties || {}
      if (got.properties.contentType !== 'text/plain' || user.sender !== 'mqtt.js' || user.qos !== String(message.qos)) {
        fail(`properties not passed through: ${JSON.stringify(got.properties)}`)
      }
    }
  }

  await client.endAsync()
  clearTimeout(timer)
  console.log(`ok ${received.length} messages over ${new URL(args.url).protocol.replace(':', '')} with MQTT ${protocolVersion === 5 ? '5.0' : '3.1.1'}`)
}

main().catch((error) => fail(`${error.code || error.name}: ${error.message}`))
