// A minimal collaborative editor: a textarea bound to the Y.Text "content" of one Yjs
// document, synced through Roomcast with the stock y-socket.io client.
//
// URL parameters: server (Roomcast's base URL, default this page's origin), doc ("<room>/<name>",
// default "project:42/spec"; the token must grant the room), token (a Roomcast JWT).
// Bundle it with esbuild (see README.md): `yjs` and `y-socket.io` come from npm.
import * as Y from "yjs";
import { SocketIOProvider } from "y-socket.io";

const params = new URLSearchParams(location.search);
const server = params.get("server") || location.origin;
const docName = params.get("doc") || "project:42/spec";
const token = params.get("token") || "";

const textarea = document.getElementById("editor");
const status = document.getElementById("status");
document.getElementById("doc").textContent = docName;
document.getElementById("server").textContent = server;

const doc = new Y.Doc();
const text = doc.getText("content");
// The transaction origin of the textarea's own edits, so that the observer skips them.
const LOCAL = "textarea";

// Local edits: the textarea's new value against the Y.Text's, as one replacement of the part
// between their common prefix and suffix (typing, deleting, pasting over a selection).
textarea.addEventListener("input", () => {
  const before = text.toString();
  const after = textarea.value;
  let start = 0;
  while (start < before.length && start < after.length && before[start] === after[start]) start++;
  let endBefore = before.length;
  let endAfter = after.length;
  while (endBefore > start && endAfter > start && before[endBefore - 1] === after[endAfter - 1]) {
    endBefore--;
    endAfter--;
  }
  doc.transact(() => {
    if (endBefore > start) text.delete(start, endBefore - start);
    if (endAfter > start) text.insert(start, after.slice(start, endAfter));
  }, LOCAL);
});

// Remote edits: the new text, with the caret and selection moved by what was inserted or
// deleted before them (text inserted right at the caret goes after it).
text.observe((event, transaction) => {
  if (transaction.origin === LOCAL) return;
  const move = (pos) => {
    let index = 0;
    for (const op of event.delta) {
      if (op.retain !== undefined) {
        index += op.retain;
      } else if (op.insert !== undefined) {
        if (index < pos) pos += op.insert.length;
        index += op.insert.length;
      } else if (op.delete !== undefined && index < pos) {
        pos -= Math.min(op.delete, pos - index);
      }
      if (index >= pos) break;
    }
    return pos;
  };
  const focused = document.activeElement === textarea;
  const [start, end] = [move(textarea.selectionStart), move(textarea.selectionEnd)];
  textarea.value = text.toString();
  if (focused) textarea.setSelectionRange(start, end);
});

// Every change goes through the server (no BroadcastChannel between tabs of one browser), so
// two tabs show what two people would see.
const provider = new SocketIOProvider(server, docName, doc, { auth: { token }, disableBc: true });
const show = (state, message) => {
  status.dataset.state = state;
  status.textContent = message;
};
provider.on("status", ({ status: s }) => {
  if (s === "connected") show("connected", "connected, syncing…");
  else if (s === "disconnected") show("disconnected", "disconnected");
});
provider.on("sync", (synced) => {
  if (synced) {
    textarea.disabled = false;
    show("synced", "connected, synced");
  }
});
provider.on("connection-error", (error) => show("error", `connection refused: ${error.message}`));
