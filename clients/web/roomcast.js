// A small Socket.IO v5 / Engine.IO v4 client over the browser's WebSocket, for the pages
// Roomcast serves itself. Only what the pages need: the websocket transport, text packets,
// one namespace per connection, events and acks. Applications should use socket.io-client.
//
// Engine.IO packets (one per WebSocket message): 0 open {sid, pingInterval, ...}, 1 close,
// 2 ping (answered with 3 pong), 4 message. Socket.IO packets ride in 4-messages:
// 0 CONNECT [nsp,] {auth}, 1 DISCONNECT, 2 EVENT [nsp,] [id] [name, ...args], 3 ACK [nsp,] id [...],
// 4 CONNECT_ERROR [nsp,] {message}. The default namespace "/" is written as nothing.

export class RoomcastSocket {
  /**
   * @param {object} opts
   * @param {string} [opts.path] Socket.IO path on this server, default "/socket.io/"
   * @param {string} [opts.namespace] "/" or "/ws"
   * @param {object} [opts.auth] the handshake auth payload, e.g. {token}
   */
  constructor({ path = "/socket.io/", namespace = "/", auth = {} } = {}) {
    this.path = path.endsWith("/") ? path : `${path}/`;
    this.namespace = namespace.startsWith("/") ? namespace : `/${namespace}`;
    this.auth = auth;
    this.handlers = new Map();
    this.acks = new Map();
    this.nextAck = 0;
    this.ws = null;
    this.connected = false;
    this.sid = null;
  }

  /** Registers `fn` for the event `name`; "connect", "connect_error" and "disconnect" too. */
  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, []);
    this.handlers.get(name).push(fn);
    return this;
  }

  /** Registers `fn(name, ...args)` for every server event. */
  onAny(fn) {
    return this.on("*", fn);
  }

  fire(name, ...args) {
    for (const fn of this.handlers.get(name) ?? []) fn(...args);
    if (!["connect", "connect_error", "disconnect"].includes(name)) {
      for (const fn of this.handlers.get("*") ?? []) fn(name, ...args);
    }
  }

  /** The namespace as it prefixes a packet: nothing for "/", else "/ws,". */
  prefix() {
    return this.namespace === "/" ? "" : `${this.namespace},`;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}${this.path}?EIO=4&transport=websocket`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (msg) => {
      if (typeof msg.data === "string") this.receive(msg.data);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      const was = this.connected;
      this.closed();
      if (was) this.fire("disconnect", "transport close");
      else this.fire("connect_error", new Error(`websocket closed (${e.code})`));
    };
    ws.onerror = () => {
      // onclose follows and reports it.
    };
    return this;
  }

  disconnect() {
    const ws = this.ws;
    if (!ws) return;
    const was = this.connected;
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(`41${this.prefix()}`);
      ws.send("1");
    }
    this.closed();
    ws.close();
    if (was) this.fire("disconnect", "io client disconnect");
  }

  closed() {
    this.ws = null;
    this.connected = false;
    for (const [, { reject, timer }] of this.acks) {
      clearTimeout(timer);
      reject(new Error("disconnected"));
    }
    this.acks.clear();
  }

  send(text) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  /** Handles one Engine.IO packet. */
  receive(text) {
    switch (text[0]) {
      case "0": // open: now connect to the namespace
        this.send(`40${this.prefix()}${JSON.stringify(this.auth)}`);
        return;
      case "2": // ping
        this.send("3");
        return;
      case "1": // close
        this.ws?.close();
        return;
      case "4":
        this.receivePacket(text.slice(1));
        return;
      default:
    }
  }

  /** Handles one Socket.IO packet (after the Engine.IO "4"). */
  receivePacket(packet) {
    const type = packet[0];
    let rest = packet.slice(1);
    let nsp = "/";
    if (rest.startsWith("/")) {
      const comma = rest.indexOf(",");
      nsp = comma < 0 ? rest : rest.slice(0, comma);
      rest = comma < 0 ? "" : rest.slice(comma + 1);
    }
    if (nsp !== this.namespace) return;
    const digits = /^\d*/.exec(rest)[0];
    const id = digits ? Number(digits) : null;
    const body = rest.slice(digits.length);
    let data;
    try {
      data = body ? JSON.parse(body) : undefined;
    } catch {
      return;
    }
    switch (type) {
      case "0":
        this.connected = true;
        this.sid = data?.sid ?? null;
        this.fire("connect");
        return;
      case "4": {
        const err = new Error(data?.message ?? "connect_error");
        err.data = data?.data;
        const ws = this.ws;
        this.closed();
        ws?.close();
        this.fire("connect_error", err);
        return;
      }
      case "1": {
        const ws = this.ws;
        this.closed();
        ws?.close();
        this.fire("disconnect", "io server disconnect");
        return;
      }
      case "2":
        if (Array.isArray(data) && typeof data[0] === "string") this.fire(data[0], ...data.slice(1));
        return;
      case "3": {
        const pending = this.acks.get(id);
        if (!pending) return;
        this.acks.delete(id);
        clearTimeout(pending.timer);
        pending.resolve(Array.isArray(data) ? data[0] : data);
        return;
      }
      default:
    }
  }

  /** Sends an event without an ack. */
  emit(name, ...args) {
    this.send(`42${this.prefix()}${JSON.stringify([name, ...args])}`);
  }

  /** Sends an event with an ack id; resolves with the ack's first argument. */
  emitWithAck(name, data, { timeout = 5000 } = {}) {
    return new Promise((resolve, reject) => {
      if (!this.connected) {
        reject(new Error("not connected"));
        return;
      }
      const id = this.nextAck++;
      const timer = setTimeout(() => {
        this.acks.delete(id);
        reject(new Error(`no ack for "${name}" within ${timeout} ms`));
      }, timeout);
      this.acks.set(id, { resolve, reject, timer });
      this.send(`42${this.prefix()}${id}${JSON.stringify([name, data])}`);
    });
  }
}

/** Replaces `el`'s children with `nodes`: text only ever goes in as text, never as HTML. */
export function fill(el, ...nodes) {
  el.replaceChildren(...nodes.map((n) => (typeof n === "string" ? document.createTextNode(n) : n)));
}

/** `<tag class=cls>` holding `children` (strings become text nodes). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else el.setAttribute(k, v);
  }
  fill(el, ...children);
  return el;
}
