// The Node reference for the bench's `yjs` scenario: the stock y-socket.io 1.1.3 server
// (`YSocketIO`, socket.io 4.8.4, yjs 13.6, in memory: no YPERSISTENCE) as its README sets it up,
// with the checks Roomcast makes at a Yjs namespace's handshake, so both servers do
// comparable work per connection:
//
//   namespace  /yjs|<room>/<name>, e.g. /yjs|project:bench-0/doc (the document is named
//              "<room>/<name>", as the stock client's roomName)
//   handshake  auth.token: an HS256/384/512 JWT {sub, exp, tenant?, projects?, role?} signed
//              with SECRET (YSocketIO's `authenticate` callback), and the room granted by the
//              token (`project:<id>` in `projects`, `user:<sub>`, `global`; admin: any), in a
//              middleware of the namespaces, which sees the namespace's name. A refusal is
//              y-socket.io's own `Unauthorized` or `forbidden`.
//   protocol   y-socket.io's, unchanged: sync-step-1 both ways (state vector, the diff in the
//              ack), sync-update (applied to the server's Y.Doc, whose update is then sent to
//              the whole namespace, the sender included), awareness-update.
//   HTTP       GET /health, GET /ready
//
// Env: PORT (8100), SECRET (the bench's default secret).

import { createServer } from "node:http";
import { Server } from "socket.io";
import { YSocketIO } from "y-socket.io/dist/server";
import jwt from "jsonwebtoken";

const PORT = Number(process.env.PORT ?? 8100);
const SECRET = process.env.SECRET ?? "roomcast-dev-secret-do-not-use-in-production";

/** The verified claims of the handshake's token, or null. */
function claims(handshake) {
  const token = handshake.auth?.token;
  if (typeof token !== "string" || token === "") return null;
  try {
    const c = jwt.verify(token, SECRET, { algorithms: ["HS256", "HS384", "HS512"] });
    return typeof c.sub === "string" && typeof c.exp === "number" ? c : null;
  } catch {
    return null;
  }
}

/** Whether the token grants `room` (`global`, `user:<sub>`, `project:<id>`, `agent:<id>`). */
function allows(c, room) {
  if (room === "global" || c.role === "admin") return true;
  const colon = room.indexOf(":");
  if (colon < 0) return false;
  const [kind, id] = [room.slice(0, colon), room.slice(colon + 1)];
  if (kind === "user") return id === c.sub;
  const grant = kind === "project" ? c.projects : kind === "agent" ? c.agents : undefined;
  return grant === "*" || (Array.isArray(grant) && grant.map(String).includes(id));
}

const http = createServer((req, res) => {
  if (req.url === "/health" || req.url === "/ready") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"ok":true}');
    return;
  }
  res.writeHead(404);
  res.end();
});
const io = new Server(http, { serveClient: false });
// The callback keeps the claims on the handshake object, which the socket carries: the token
// is verified once per connection, as Roomcast does.
const authenticate = (handshake) => (handshake.claims = claims(handshake)) !== null;
const ysocketio = new YSocketIO(io, { authenticate });
ysocketio.initialize();
// YSocketIO's own middleware (the authenticate callback) runs first; this one checks the room
// of the namespace against the token, which the callback cannot: it sees the handshake only.
ysocketio.nsp.use((socket, next) => {
  const doc = socket.nsp.name.slice("/yjs|".length);
  const slash = doc.indexOf("/");
  const room = slash < 0 ? doc : doc.slice(0, slash);
  const c = socket.handshake.claims;
  return c !== null && slash > 0 && allows(c, room) ? next() : next(new Error("forbidden"));
});

http.listen(PORT, "127.0.0.1", () => console.error(`y-socket.io reference on ${PORT}`));
