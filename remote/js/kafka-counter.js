// The remote variant of the Kafka example (examples/kafka), written with
// the official Apache Flink StateFun JavaScript SDK (3.3.0):
// example/remote-counter counts the messages of each instance and, for
// each, writes a Kafka record with the SDK's KafkaEgressBuilder
// (kafkaEgressMessage) to the egress example/counts: topic "counts", key =
// the instance id, value = "<count> <message>". The same code runs on
// StateFun with the same module.yaml.
//
// Usage: node kafka-counter.js [port]. Port 0 picks a free one; the first
// line on stdout is {"port": N} once the server listens.
"use strict";

const { serve } = require("./serve");
const { StateFun, kafkaEgressMessage } = require("apache-flink-statefun");

const statefun = new StateFun();

statefun.bind({
  typename: "example/remote-counter",
  specs: [{ name: "count", type: StateFun.intType() }],
  fn(context, message) {
    const count = (context.storage.count || 0) + 1;
    context.storage.count = count;
    context.send(kafkaEgressMessage({
      typename: "example/counts",
      topic: "counts",
      key: context.self.id,
      value: count + " " + message.rawValueBytes.toString(),
    }));
  },
});

serve(statefun);
