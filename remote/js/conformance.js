// A StateFun remote function written with the official JavaScript SDK
// (apache-flink-statefun 3.3.0), used by remote/conformance_test.go to prove
// that shardfn's client speaks the request-reply protocol as the SDK does.
//
// conf/counter (state: seen int, expires 60 s after write; last string,
// expires 30 s after each call) on a string message <name>:
//   - "reset": clears seen (a DELETE mutation) and does nothing else;
//   - otherwise: seen += 1, last = <name>; sends "hello <name> #<seen>" to
//     conf/echo/<name>; sends "tick" to itself after 1500 ms with token
//     tick-<id>-<seen> and cancels tick-<id>-<seen-1>; writes a conf/record
//     JSON record to egress conf/out; and, when there is a caller, replies
//     "ack <seen>" to it.
// conf/echo (no state) sends its input back to its caller, if any.
//
// e2e/session, used by remote/e2e_test.go through the shardfn server, takes
// e2e/cmd JSON messages {"op": ...} (state: note string, expires 3 s after
// write; count int; fired string, the names of fired timers in order):
//   - note {text}: note = text, count += 1, writes {"op":"note","id","text",
//     "count"} to egress shardfn/e2e-out (the engine's "e2e-out" log);
//   - peek: nothing but the reply;
//   - arm {name, delay, token}: sends {"op":"fire","name"} to itself after
//     delay ms with cancellation token token;
//   - cancel {token}: cancels that delayed message;
//   - fire {name}: appends name (space separated) to fired and writes
//     {"op":"fire","id","name"} to e2e-out;
//   - locate {driver, cell}: sends rides/location {"cell"} to the embedded
//     Go function rides/driver/<driver>;
//   - request {passenger, cell}: sends rides/request {"cell"} to the
//     embedded rides/passenger/<passenger>, whose ride answers the request
//     that started the chain;
// and every op but request answers with an e2e/reply JSON {"id","note",
// "count","fired"} of the state after the op, sent to shardfn/reply/<token>
// (the engine's reply convention): the caller's token when the caller is
// shardfn/reply/<token>, else "chain" when there is no caller (an ingress
// message: the engine answers the request that started the chain, if one
// waits); messages from other functions (the timers) get no reply.
//
// Usage: node conformance.js [port]. Port 0 (the default) picks a free one;
// the first line on stdout is {"port": N} once the server listens.
"use strict";

const { serve } = require("./serve");
const { StateFun, messageBuilder, egressMessageBuilder } = require("apache-flink-statefun");

const RECORD = StateFun.jsonType("conf/record");

const statefun = new StateFun();

statefun.bind({
  typename: "conf/counter",
  specs: [
    { name: "seen", type: StateFun.intType(), expireAfterWrite: 60000 },
    { name: "last", type: StateFun.stringType(), expireAfterCall: 30000 },
  ],
  fn(context, message) {
    const name = message.asString();
    const self = context.self;
    if (name === "reset") {
      context.storage.seen = null;
      return;
    }
    const seen = (context.storage.seen || 0) + 1;
    context.storage.seen = seen;
    context.storage.last = name;

    context.send(messageBuilder({ typename: "conf/echo", id: name, value: `hello ${name} #${seen}` }));
    context.sendAfter(1500, messageBuilder({ typename: self.typename, id: self.id, value: "tick" }), `tick-${self.id}-${seen}`);
    if (seen > 1) {
      context.cancelDelayedMessage(`tick-${self.id}-${seen - 1}`);
    }
    context.send(egressMessageBuilder({
      typename: "conf/out",
      value: { id: self.id, name: name, seen: seen },
      valueType: RECORD,
    }));
    const caller = context.caller;
    if (caller !== null) {
      context.send(messageBuilder({ typename: caller.typename, id: caller.id, value: `ack ${seen}` }));
    }
  },
});

statefun.bind({
  typename: "conf/echo",
  fn(context, message) {
    const caller = context.caller;
    if (caller !== null) {
      context.send(messageBuilder({ typename: caller.typename, id: caller.id, value: message.asString() }));
    }
  },
});

const CMD = StateFun.jsonType("e2e/cmd");
const REPLY = StateFun.jsonType("e2e/reply");
const OUT = StateFun.jsonType("e2e/out");
const LOCATION = StateFun.jsonType("rides/location");
const REQUEST = StateFun.jsonType("rides/request");

statefun.bind({
  typename: "e2e/session",
  specs: [
    { name: "note", type: StateFun.stringType(), expireAfterWrite: 3000 },
    { name: "count", type: StateFun.intType() },
    { name: "fired", type: StateFun.stringType() },
  ],
  fn(context, message) {
    const cmd = message.as(CMD);
    const self = context.self;
    const egress = (value) =>
      context.send(egressMessageBuilder({ typename: "shardfn/e2e-out", value: value, valueType: OUT }));
    switch (cmd.op) {
      case "note": {
        const count = (context.storage.count || 0) + 1;
        context.storage.note = cmd.text;
        context.storage.count = count;
        egress({ op: "note", id: self.id, text: cmd.text, count: count });
        break;
      }
      case "peek":
        break;
      case "arm":
        context.sendAfter(cmd.delay,
          messageBuilder({ typename: self.typename, id: self.id, value: { op: "fire", name: cmd.name }, valueType: CMD }),
          cmd.token);
        break;
      case "cancel":
        context.cancelDelayedMessage(cmd.token);
        break;
      case "fire": {
        const fired = context.storage.fired;
        context.storage.fired = fired ? fired + " " + cmd.name : cmd.name;
        egress({ op: "fire", id: self.id, name: cmd.name });
        break;
      }
      case "locate":
        context.send(messageBuilder({ typename: "rides/driver", id: cmd.driver, value: { cell: cmd.cell }, valueType: LOCATION }));
        break;
      case "request":
        context.send(messageBuilder({ typename: "rides/passenger", id: cmd.passenger, value: { cell: cmd.cell }, valueType: REQUEST }));
        return;
      default:
        throw new Error(`e2e/session: unknown op ${cmd.op}`);
    }
    // The reply token: the caller's id when the request reached us from
    // shardfn/reply/<token>, "chain" (the request that started this chain)
    // for an ingress message with no caller; other callers get no reply.
    const caller = context.caller;
    const token = caller === null ? "chain" : caller.typename === "shardfn/reply" ? caller.id : null;
    if (token !== null) {
      context.send(messageBuilder({
        typename: "shardfn/reply", id: token, valueType: REPLY,
        value: {
          id: self.id,
          note: context.storage.note ?? null,
          count: context.storage.count || 0,
          fired: context.storage.fired || "",
        },
      }));
    }
  },
});

serve(statefun);
