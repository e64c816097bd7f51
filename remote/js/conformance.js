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
// Usage: node conformance.js [port]. Port 0 (the default) picks a free one;
// the first line on stdout is {"port": N} once the server listens.
"use strict";

const http = require("http");
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

const port = Number(process.argv[2] || process.env.PORT || 0);
const server = http.createServer(statefun.handler());
server.keepAliveTimeout = 60000;
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
