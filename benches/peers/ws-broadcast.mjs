// ws-broadcast.mjs: a plain WebSocket broadcast server on Node's `ws`, the comparison
// peer for `switchboard bench --target ws-broadcast`. No registration, no rooms: every
// text frame a client sends goes to every other connected client (not back to the
// sender). Listens on loopback only.
//
//   node ws-broadcast.mjs [PORT [HOST]]       (or WS_BROADCAST_PORT / WS_BROADCAST_HOST)
import { WebSocketServer, WebSocket } from 'ws';

const port = Number(process.argv[2] ?? process.env.WS_BROADCAST_PORT ?? 8080);
const host = process.argv[3] ?? process.env.WS_BROADCAST_HOST ?? '127.0.0.1';
if (!['127.0.0.1', '::1', 'localhost'].includes(host)) {
  console.error(`ws-broadcast: refusing to listen on ${host}; loopback only`);
  process.exit(2);
}

// No compression: Switchboard's door has none either, and it would dominate the cost.
const server = new WebSocketServer({ host, port, perMessageDeflate: false });

server.on('connection', (client) => {
  client.on('message', (data, isBinary) => {
    for (const other of server.clients) {
      if (other !== client && other.readyState === WebSocket.OPEN) {
        other.send(data, { binary: isBinary });
      }
    }
  });
  // A client that resets is just gone; without a listener the error would end the process.
  client.on('error', () => {});
});

server.on('error', (error) => {
  console.error(`ws-broadcast: ${error.message}`);
  process.exit(1);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const client of server.clients) client.terminate();
    server.close(() => process.exit(0));
  });
}
