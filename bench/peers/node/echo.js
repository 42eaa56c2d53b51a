// The W6 echo server on Node.js, for bench/compare: net.createServer on
// 127.0.0.1 at an ephemeral port, TCP_NODELAY, every chunk written back.
// Prints "listening on 127.0.0.1:PORT"; SIGTERM ends it.
'use strict';
const net = require('net');

const server = net.createServer({ noDelay: true }, (sock) => {
  sock.on('data', (chunk) => sock.write(chunk));
  sock.on('error', () => sock.destroy());
});
server.listen(0, '127.0.0.1', () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
