// The RS-1 ride-sharing functions (see workload-rides.md) written with the
// official StateFun JavaScript SDK (apache-flink-statefun 3.3.0), for the
// "remote" variant of the benchmark: shardfn calls them over StateFun's
// request-reply protocol.
//
// They mirror the embedded Go functions of package rides byte for byte:
//   - the same function types (rides/driver, passenger, geocell, ride), state
//     names and state encodings (raw UTF-8 strings of type shardfn/bytes,
//     io.statefun.types/long counters, the rides/set free set), so that the
//     load generator's state decoders and invariant checks work unchanged;
//   - the same internal message type names and compact bodies (each field a
//     uvarint length then its bytes; rides/find ends with a bare uvarint hop),
//     so remote and embedded functions could even call each other;
//   - the wire types of the workload: rides/location and rides/request in,
//     rides/outcome replies and rides/event egress records out, as JSON.
//
// Two shardfn conventions stand in for what StateFun lacks:
//   - Reply: the ride answers a request by sending the outcome to
//     shardfn/reply/<token>; the engine turns that send into the reply of the
//     waiting request. When the request reaches the passenger with caller
//     shardfn/reply/<token>, that token is used (handed to the ride in init's
//     "reply" field and kept in the ride's reply state); otherwise the token
//     is "chain", for an engine that answers the request that started the
//     chain of messages.
//   - Egress: StateFun egress names are namespace/type; an egress in
//     namespace "shardfn" is delivered to the bare-named egress, so
//     shardfn/ride-events writes to the engine's ride-events log.
//
// Environment: PORT (default 0 = any free port; the first stdout line is
// {"port": N}), RIDES_GRID (100), RIDES_FINISH_DELAY_MS (2000),
// RIDES_FINISH_JITTER (0.25), RIDES_MAX_RETRIES (3).
"use strict";

const { serve } = require("./serve");
const { StateFun, messageBuilder, egressMessageBuilder } = require("apache-flink-statefun");

const cfg = {
  grid: intEnv("RIDES_GRID", 100),
  finishDelayMs: intEnv("RIDES_FINISH_DELAY_MS", 2000),
  finishJitter: floatEnv("RIDES_FINISH_JITTER", 0.25),
  maxRetries: intEnv("RIDES_MAX_RETRIES", 3),
};

function intEnv(name, def) {
  const v = process.env[name];
  return v === undefined || v === "" ? def : parseInt(v, 10);
}

function floatEnv(name, def) {
  const v = process.env[name];
  return v === undefined || v === "" ? def : parseFloat(v);
}

// ---------------------------------------------------------------------------
// Encodings

function appendUvarint(out, v) {
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

// encodeFields writes each string as uvarint length + UTF-8 bytes; a number
// in the list is written as a bare uvarint.
function encodeFields(vs) {
  const out = [];
  for (const v of vs) {
    if (typeof v === "number") {
      appendUvarint(out, v);
      continue;
    }
    const b = Buffer.from(v, "utf8");
    appendUvarint(out, b.length);
    for (const x of b) out.push(x);
  }
  return Buffer.from(out);
}

function readUvarint(buf, pos) {
  let v = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw new Error("rides: truncated uvarint");
    const b = buf[pos++];
    v += (b & 0x7f) * mul;
    if (b < 0x80) return [v, pos];
    mul *= 128;
  }
  throw new Error("rides: uvarint too long");
}

// decodeFields reads string fields to the end of buf; with nInts > 0 the
// last nInts values are bare uvarints.
function decodeFields(buf, nStrings, nInts) {
  const out = [];
  let pos = 0;
  while (pos < buf.length && (nStrings === undefined || out.length < nStrings)) {
    let n;
    [n, pos] = readUvarint(buf, pos);
    if (pos + n > buf.length) throw new Error("rides: truncated field");
    out.push(buf.subarray(pos, pos + n).toString("utf8"));
    pos += n;
  }
  for (let i = 0; i < (nInts || 0); i++) {
    let v;
    [v, pos] = readUvarint(buf, pos);
    out.push(v);
  }
  return out;
}

const BYTES = StateFun.customType("shardfn/bytes",
  (s) => Buffer.from(s, "utf8"), (b) => b.toString("utf8"));

// io.statefun.types/long = LongWrapper{sfixed64 value = 1}; zero is empty.
const LONG = StateFun.customType("io.statefun.types/long",
  (n) => {
    if (n === 0) return Buffer.alloc(0);
    const b = Buffer.alloc(9);
    b[0] = 0x09;
    b.writeBigInt64LE(BigInt(n), 1);
    return b;
  },
  (b) => (b.length >= 9 && b[0] === 0x09 ? Number(b.readBigInt64LE(1)) : 0));

const SET = StateFun.customType("rides/set", (ids) => encodeFields(ids), (b) => decodeFields(b));

function fieldsType(typename, nStrings, nInts) {
  return StateFun.customType(typename, (vs) => encodeFields(vs), (b) => decodeFields(b, nStrings, nInts));
}

const T = {
  location: StateFun.jsonType("rides/location"),
  request: StateFun.jsonType("rides/request"),
  touch: StateFun.jsonType("rides/touch"),
  outcome: StateFun.customType("rides/outcome", (s) => Buffer.from(s, "utf8"), (b) => b.toString("utf8")),
  event: StateFun.customType("rides/event", (s) => Buffer.from(s, "utf8"), (b) => b.toString("utf8")),
  join: fieldsType("rides/join"),
  leave: fieldsType("rides/leave"),
  find: fieldsType("rides/find", 2, 1),
  offer: fieldsType("rides/offer"),
  accept: fieldsType("rides/accept"),
  decline: fieldsType("rides/decline"),
  none: fieldsType("rides/none"),
  init: fieldsType("rides/init"),
  finish: fieldsType("rides/finish"),
  completed: fieldsType("rides/completed"),
  failed: fieldsType("rides/failed"),
};

function send(context, fnType, id, type, value) {
  context.send(messageBuilder({ typename: "rides/" + fnType, id: id, value: value, valueType: type }));
}

function reply(context, token, outcome) {
  if (token) {
    // JSON key order as the embedded functions write it.
    let s = `{"ride":${JSON.stringify(outcome.ride)}`;
    if (outcome.driver) s += `,"driver":${JSON.stringify(outcome.driver)}`;
    if (outcome.failed) s += `,"failed":true`;
    context.send(messageBuilder({ typename: "shardfn/reply", id: token, value: s + "}", valueType: T.outcome }));
  }
}

function egress(context, kind, ride, driver, passenger) {
  const s = `{"kind":${JSON.stringify(kind)},"ride":${JSON.stringify(ride)},"driver":${JSON.stringify(driver)},"passenger":${JSON.stringify(passenger)}}`;
  context.send(egressMessageBuilder({ typename: "shardfn/ride-events", value: s, valueType: T.event }));
}

function cellBody(message, type) {
  const body = message.as(type);
  if (body === null || typeof body.cell !== "string" || body.cell === "") {
    throw new Error(`rides: ${message.valueTypeName} wants a non-empty string "cell"`);
  }
  return body.cell;
}

// neighbour returns the hop-th cell around origin (1..8: row above left to
// right, left, right, row below), or null when off the grid.
const OFFSETS = [[-1, -1], [0, -1], [1, -1], [-1, 0], [1, 0], [-1, 1], [0, 1], [1, 1]];
function neighbour(origin, hop) {
  const m = /^(\d+)-(\d+)$/.exec(origin);
  if (m === null || hop < 1 || hop > 8) return null;
  const x = parseInt(m[1], 10) + OFFSETS[hop - 1][0];
  const y = parseInt(m[2], 10) + OFFSETS[hop - 1][1];
  if (x < 0 || y < 0 || x >= cfg.grid || y >= cfg.grid) return null;
  return `${x}-${y}`;
}

// finishDelay spreads the delay over FinishDelay*(1±jitter) by a hash of the
// ride id, exactly as the embedded functions do.
const MASK64 = (1n << 64n) - 1n;
function finishDelay(ride) {
  if (cfg.finishJitter === 0) return cfg.finishDelayMs;
  let h = 14695981039346656037n;
  for (const c of Buffer.from(ride, "utf8")) {
    h ^= BigInt(c);
    h = (h * 1099511628211n) & MASK64;
  }
  h ^= h >> 33n;
  h = (h * 0xff51afd7ed558ccdn) & MASK64;
  h ^= h >> 33n;
  const u = Number(h >> 11n) / 2 ** 53;
  return Math.floor(cfg.finishDelayMs * (1 - cfg.finishJitter + 2 * cfg.finishJitter * u));
}

// ---------------------------------------------------------------------------
// Functions

const statefun = new StateFun();

statefun.bind({
  typename: "rides/driver",
  specs: [
    { name: "cell", type: BYTES },
    { name: "joined", type: BYTES },
    { name: "status", type: BYTES },
    { name: "ride", type: BYTES },
  ],
  fn(context, message) {
    const s = context.storage;
    const self = context.self.id;
    if (message.is(T.location)) {
      const cell = cellBody(message, T.location);
      if (s.cell !== cell) s.cell = cell;
      let status = s.status;
      if (!status) {
        s.status = "free";
        status = "free";
      }
      if (status !== "free") return;
      const joined = s.joined;
      if (joined === cell) return;
      if (joined) send(context, "geocell", joined, T.leave, [self]);
      send(context, "geocell", cell, T.join, [self]);
      s.joined = cell;
      return;
    }
    if (message.is(T.offer)) {
      const [ride] = message.as(T.offer);
      if (s.status !== "free") {
        send(context, "ride", ride, T.decline, [self]);
        return;
      }
      s.status = "on_ride";
      s.ride = ride;
      const joined = s.joined;
      if (joined) {
        send(context, "geocell", joined, T.leave, [self]);
        s.joined = null;
      }
      send(context, "ride", ride, T.accept, [self]);
      context.sendAfter(finishDelay(ride),
        messageBuilder({ typename: "rides/driver", id: self, value: [ride], valueType: T.finish }));
      return;
    }
    if (message.is(T.finish)) {
      const [ride] = message.as(T.finish);
      if (s.status !== "on_ride" || s.ride !== ride) return; // stale
      s.status = "free";
      s.ride = null;
      const cell = s.cell;
      if (cell) {
        send(context, "geocell", cell, T.join, [self]);
        s.joined = cell;
      }
      send(context, "ride", ride, T.completed, [self]);
      return;
    }
    throw new Error(`rides/driver: unexpected message ${message.valueTypeName}`);
  },
});

statefun.bind({
  typename: "rides/passenger",
  specs: [
    { name: "ride", type: BYTES },
    { name: "rides", type: LONG },
    { name: "seq", type: LONG },
    { name: "seen", type: BYTES },
  ],
  fn(context, message) {
    const s = context.storage;
    const self = context.self.id;
    if (message.is(T.request)) {
      const cell = cellBody(message, T.request);
      const caller = context.caller;
      // With no shardfn/reply caller (an engine that routes replies by the
      // chain of messages rather than by token), answer shardfn/reply/chain:
      // such an engine treats any id as "the request that started this chain".
      const token = caller !== null && caller.namespace === "shardfn" && caller.name === "reply" ? caller.id : "chain";
      if (s.ride) {
        reply(context, token, { ride: "", failed: true });
        return;
      }
      const seq = (s.seq || 0) + 1;
      s.seq = seq;
      const id = `${self}-${seq}`;
      s.ride = id;
      send(context, "ride", id, T.init, [self, cell, token]);
      return;
    }
    if (message.is(T.touch)) {
      s.seen = cellBody(message, T.touch);
      return;
    }
    if (message.is(T.failed) || message.is(T.completed)) {
      const [ride] = message.is(T.failed) ? message.as(T.failed) : message.as(T.completed);
      if (s.ride !== ride) return;
      s.ride = null;
      if (message.is(T.completed)) s.rides = (s.rides || 0) + 1;
      return;
    }
    throw new Error(`rides/passenger: unexpected message ${message.valueTypeName}`);
  },
});

statefun.bind({
  typename: "rides/geocell",
  specs: [{ name: "free", type: SET }],
  fn(context, message) {
    const s = context.storage;
    if (message.is(T.join) || message.is(T.leave)) {
      const isJoin = message.is(T.join);
      const [driver] = message.as(isJoin ? T.join : T.leave);
      const set = s.free || [];
      const i = set.indexOf(driver);
      if (isJoin && i < 0) {
        set.push(driver);
        s.free = set;
      } else if (!isJoin && i >= 0) {
        set.splice(i, 1);
        s.free = set.length > 0 ? set : null;
      }
      return;
    }
    if (message.is(T.find)) {
      const [ride, origin, hop] = message.as(T.find);
      const set = s.free || [];
      if (set.length > 0) {
        const driver = set.pop();
        s.free = set.length > 0 ? set : null;
        send(context, "driver", driver, T.offer, [ride, context.self.id]);
        return;
      }
      for (let h = hop + 1; h <= 8; h++) {
        const n = neighbour(origin, h);
        if (n !== null) {
          send(context, "geocell", n, T.find, [ride, origin, h]);
          return;
        }
      }
      send(context, "ride", ride, T.none, []);
      return;
    }
    throw new Error(`rides/geocell: unexpected message ${message.valueTypeName}`);
  },
});

function fail(context) {
  const s = context.storage;
  const id = context.self.id;
  s.status = "failed";
  reply(context, s.reply, { ride: id, failed: true });
  send(context, "passenger", s.passenger, T.failed, [id]);
}

statefun.bind({
  typename: "rides/ride",
  specs: [
    { name: "passenger", type: BYTES },
    { name: "driver", type: BYTES },
    { name: "cell", type: BYTES },
    { name: "status", type: BYTES },
    { name: "reply", type: BYTES },
    { name: "tries", type: LONG },
  ],
  fn(context, message) {
    const s = context.storage;
    const id = context.self.id;
    const status = s.status;
    if (message.is(T.init)) {
      const [passenger, cell, token] = message.as(T.init);
      if (status) return; // a ride is initialised once
      s.passenger = passenger || null;
      s.cell = cell || null;
      s.reply = token || null;
      s.status = "searching";
      send(context, "geocell", cell, T.find, [id, cell, 0]);
      return;
    }
    if (message.is(T.accept)) {
      const [driver] = message.as(T.accept);
      if (status !== "searching") return;
      s.driver = driver;
      s.status = "started";
      reply(context, s.reply, { ride: id, driver: driver });
      egress(context, "ride-started", id, driver, s.passenger || "");
      return;
    }
    if (message.is(T.decline)) {
      if (status !== "searching") return;
      const tries = (s.tries || 0) + 1;
      if (tries > cfg.maxRetries) {
        fail(context);
        return;
      }
      s.tries = tries;
      send(context, "geocell", s.cell, T.find, [id, s.cell, 0]);
      return;
    }
    if (message.is(T.none)) {
      if (status !== "searching") return;
      fail(context);
      return;
    }
    if (message.is(T.completed)) {
      const [driver] = message.as(T.completed);
      if (status !== "started" || s.driver !== driver) return;
      s.status = "completed";
      send(context, "passenger", s.passenger, T.completed, [id]);
      egress(context, "ride-completed", id, driver, s.passenger || "");
      return;
    }
    throw new Error(`rides/ride: unexpected message ${message.valueTypeName}`);
  },
});

module.exports = { statefun, finishDelay, neighbour, encodeFields, decodeFields };

if (require.main === module) {
  serve(statefun);
}
