// The message-mix load generator of bench/fleet.py in Node.js (`--client node`): the
// same stations, certificates and messages as the Python client, at a fraction of its
// CPU per message (TLS in Node's native code, a minimal websocket client), so that
// the servers, not the generator, take the cores. No packages: Node's own tls.
//
// Usage: node bench/loadgen.mjs CONFIG.json, where CONFIG is
//   {"port": N, "duration_s": S, "root": "cso-root.pem",
//    "stations": [["CS00000", "CS00000.pem", "CS00000.key"], ...]}
// Each station connects (TLS 1.3 with its certificate, websocket upgrade, subprotocol
// ocpp2.0.1), boots, then sends the mix one message at a time, waiting for each answer,
// until the duration is up. Prints "started" on stdout when every station has booted,
// then {"answered": N, "elapsed_s": T, "cpu_s": C} (C: this process's CPU in T).
// Loopback only; exits when done, or with an error on the first failure.

import crypto from "node:crypto";
import fs from "node:fs";
import tls from "node:tls";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const ca = fs.readFileSync(config.root);

function frame(text) {
  const payload = Buffer.from(text);
  const length = payload.length;
  const head = length < 126 ? 2 : 4;
  const out = Buffer.allocUnsafe(head + 4 + length);
  out[0] = 0x81; // FIN, text
  if (length < 126) {
    out[1] = 0x80 | length;
  } else {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(length, 2);
  }
  const mask = crypto.randomBytes(4);
  mask.copy(out, head);
  for (let i = 0; i < length; i++) out[head + 4 + i] = payload[i] ^ mask[i & 3];
  return out;
}

class Station {
  constructor(id, socket) {
    this.id = id;
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.waiting = null;
    this.closing = false;
  }

  received(data) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, data]) : data;
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) return;
      let length = b[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (b.length < 4) return;
        length = b.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (b.length < 10) return;
        length = Number(b.readBigUInt64BE(2));
        offset = 10;
      }
      if (b.length < offset + length) return;
      const opcode = b[0] & 0x0f;
      const payload = b.subarray(offset, offset + length);
      this.buffer = b.subarray(offset + length);
      if (opcode === 0x1) {
        const resolve = this.waiting;
        this.waiting = null;
        resolve(payload.toString());
      } else if (opcode === 0x9) {
        this.socket.write(Buffer.concat([Buffer.from([0x8a, 0x80 | payload.length]),
          Buffer.alloc(4), payload])); // pong, zero mask
      } else if (opcode === 0x8 && !this.closing) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : "-";
        this.fail(new Error(`${this.id}: closed by the server (${code} ${payload.subarray(2)})`));
      }
    }
  }

  fail(error) {
    console.error(error.message);
    process.exit(1);
  }

  close() {
    this.closing = true;
    const close = Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]); // 1000, zero mask
    this.socket.end(close);
  }

  call(text) {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write(frame(text));
    });
  }
}

function connect(id, cert, key) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1", port: config.port, ca, cert: fs.readFileSync(cert),
      key: fs.readFileSync(key), minVersion: "TLSv1.3",
    });
    socket.setNoDelay(true);
    socket.once("error", reject);
    socket.once("secureConnect", () => {
      const nonce = crypto.randomBytes(16).toString("base64");
      socket.write(
        `GET /ocpp/${id} HTTP/1.1\r\nHost: 127.0.0.1:${config.port}\r\n` +
        "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Key: ${nonce}\r\nSec-WebSocket-Version: 13\r\n` +
        "Sec-WebSocket-Protocol: ocpp2.0.1\r\n\r\n");
    });
    let head = Buffer.alloc(0);
    const upgrading = (data) => {
      head = Buffer.concat([head, data]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", upgrading);
      if (!head.subarray(0, 12).toString().includes(" 101")) {
        reject(new Error(`${id}: upgrade answered ${head.subarray(0, end)}`));
        return;
      }
      const station = new Station(id, socket);
      socket.on("data", (more) => station.received(more));
      socket.on("error", (error) => station.fail(error));
      if (head.length > end + 4) station.received(head.subarray(end + 4));
      resolve(station);
    };
    socket.on("data", upgrading);
  });
}

function now() {
  return new Date().toISOString(); // millisecond precision, Z
}

// The n-th message of a station's steady mix, as bench/fleet.py's mix() builds it.
function mix(id, n) {
  const at = now();
  const meter = [{ timestamp: at, sampledValue: [{ value: 1000.0 + n }] }];
  switch (n % 4) {
    case 0:
      return JSON.stringify([2, `m${n}`, "Heartbeat", {}]);
    case 1:
      return JSON.stringify([2, `m${n}`, "StatusNotification",
        { timestamp: at, connectorStatus: "Occupied", evseId: 1, connectorId: 1 }]);
    case 2:
      return JSON.stringify([2, `m${n}`, "TransactionEvent", {
        eventType: "Updated", timestamp: at, triggerReason: "MeterValuePeriodic", seqNo: n,
        transactionInfo: { transactionId: `TX-${id}` }, meterValue: meter,
      }]);
    default:
      return JSON.stringify([2, `m${n}`, "MeterValues", { evseId: 1, meterValue: meter }]);
  }
}

const BOOT = JSON.stringify([2, "b", "BootNotification",
  { reason: "PowerUp", chargingStation: { model: "Bench", vendorName: "pkictl" } }]);

async function main() {
  const stations = await Promise.all(config.stations.map(([id, cert, key]) => connect(id, cert, key)));
  for (const station of stations) {
    const reply = JSON.parse(await station.call(BOOT));
    if (reply[0] !== 3 || reply[2].status !== "Accepted") station.fail(new Error(`${station.id}: boot answered ${JSON.stringify(reply)}`));
  }
  let answered = 0;
  console.log("started"); // the server's CPU is read from here
  const cpu = process.cpuUsage();
  const started = performance.now();
  const deadline = started + config.duration_s * 1000;
  await Promise.all(stations.map(async (station) => {
    for (let n = 0; performance.now() < deadline; n++) {
      const reply = JSON.parse(await station.call(mix(station.id, n)));
      if (reply[0] !== 3) station.fail(new Error(`${station.id}: ${JSON.stringify(reply)}`));
      answered++;
    }
  }));
  const elapsed = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  console.log(JSON.stringify({ answered, elapsed_s: elapsed, cpu_s: (used.user + used.system) / 1e6 }));
  for (const station of stations) station.close();
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
