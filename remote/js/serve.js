// serve.js serves the handler of a StateFun SDK instance over HTTP on
// 127.0.0.1: the port is the first argument, else $PORT, else 0 (a free
// one). Once the server listens, the first line on stdout is {"port": N}
// (the Go tests and cmd/loadgen read it). SIGTERM closes the server and
// exits 0.
"use strict";

const http = require("http");

function serve(statefun) {
  const port = Number(process.argv[2] || process.env.PORT || 0);
  const server = http.createServer(statefun.handler());
  server.keepAliveTimeout = 60000;
  server.listen(port, "127.0.0.1", () => {
    process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
  });
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
  return server;
}

module.exports = { serve };
