// The client rule of a followed stream (WEBSOCKET_API.md section 13), against a scripted
// server: overlaps are trimmed by code points, a gap triggers one resume (not one per
// delta), an answer from before a reconnect is ignored, and the end is reported only once
// the text is complete.
import { test } from "node:test";
import assert from "node:assert/strict";

import { RoomcastStream } from "../dist/index.js";

function scriptedHost() {
  const sent = [];
  return {
    sent,
    connected: true,
    send(name, payload, done) {
      sent.push({ name, payload, done });
    },
    retain() {
      return { ready: Promise.resolve(), release() {} };
    },
    afterRoom(_room, op) {
      void op();
    },
    detach() {},
  };
}

const ack = (offset, text, status = "open", length = offset + Array.from(text).length) => ({
  ok: true,
  stream_id: "s1",
  room: "project:1",
  kind: "llm",
  status,
  offset,
  length,
  text,
});

test("overlaps are trimmed by code points; a gap resumes once; the end waits for the whole text", async () => {
  const host = scriptedHost();
  const s = new RoomcastStream(host, "s1");
  const statuses = [];
  s.on("status", (st) => statuses.push(st));
  assert.deepEqual(host.sent.map((m) => [m.name, m.payload]), [["stream.resume", { stream_id: "s1", offset: 0 }]]);

  // A delta at 0 before the answer; the answer overlaps it.
  s.handle("stream.delta", { stream_id: "s1", offset: 0, text: "👩‍💻ab" });
  host.sent[0].done(null, ack(0, "👩‍💻a"));
  assert.equal(s.text, "👩‍💻ab");
  assert.equal(s.length, 5);
  assert.equal(s.room, "project:1");

  // Overlapping by two code points ("ab"): only "c" is new.
  s.handle("stream.delta", { stream_id: "s1", offset: 3, text: "abc" });
  assert.equal(s.text, "👩‍💻abc");
  // Entirely old: nothing.
  s.handle("stream.delta", { stream_id: "s1", offset: 1, text: "\u200d💻" });
  assert.equal(s.text, "👩‍💻abc");

  // A gap: one resume from what it has, however many deltas come meanwhile.
  s.handle("stream.delta", { stream_id: "s1", offset: 9, text: "x" });
  s.handle("stream.delta", { stream_id: "s1", offset: 10, text: "y" });
  assert.equal(host.sent.length, 2);
  assert.deepEqual(host.sent[1].payload, { stream_id: "s1", offset: 6 });
  host.sent[1].done(null, ack(6, "漢字e\u0301"));
  assert.equal(s.text, "👩‍💻abc漢字e\u0301");
  assert.equal(s.length, 10);

  // A reconnect: the answer in flight is stale; the new resume's answer counts.
  s.handle("stream.delta", { stream_id: "s1", offset: 12, text: "z" });
  assert.equal(host.sent.length, 3);
  s.disconnected();
  s.reconnected();
  await Promise.resolve();
  assert.equal(host.sent.length, 4);
  host.sent[2].done(null, ack(10, "STALE"));
  assert.equal(s.text, "👩‍💻abc漢字e\u0301");
  host.sent[3].done(null, ack(10, "yz"));
  assert.equal(s.text, "👩‍💻abc漢字e\u0301yz");

  // The end comes before the last text: still open, and a resume fetches the rest.
  s.handle("stream.finished", { stream_id: "s1", length: 14, duration_ms: 5 });
  assert.equal(s.status, "open");
  assert.deepEqual(statuses, []);
  assert.equal(host.sent.length, 5);
  host.sent[4].done(null, ack(12, "🎉!", "finished", 14));
  assert.equal(s.text, "👩‍💻abc漢字e\u0301yz🎉!");
  assert.equal(s.status, "finished");
  assert.deepEqual(statuses, ["finished"]);
  assert.equal(await s.done, "finished");
});
