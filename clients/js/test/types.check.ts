// Compile-only checks of the public types (npm test runs `tsc -p test/tsconfig.json`).
import { createClient, type Envelope, type RoomcastError } from "../dist/index.js";
import { usePublish, useEvent, useRoom, useStream, useTyping } from "../dist/react/index.js";

const client = createClient({ url: "http://127.0.0.1:1", token: "t", autoConnect: false });

client.on("workflow.progress", (env) => {
  const progress: number = env.data.progress;
  const type: "workflow.progress" = env.type;
  // @ts-expect-error workflow.progress has no `title`
  void env.data.title;
  void progress, type;
});
client.on("task.progress", (env) => {
  // The server's fields: optional, absent while unknown.
  const eta: number | undefined = env.data.eta_ms;
  const rate: number | undefined = env.data.rate_per_sec;
  const current: number = env.data.current;
  void eta, rate, current;
});
client.on("pr.created", (env) => {
  const merged: boolean | undefined = env.data.merged;
  void merged;
});
client.on("gap", ({ room, epoch, seq }) => void [room, epoch, seq]);
client.on("error", (err: RoomcastError) => void err.code);
// @ts-expect-error not an event type
client.on("project.renamed", () => undefined);

// Client events: the ack's seq is optional (volatile), `from` is on every envelope type.
void client.publish("project:1", "chat.message", { text: "hi" }, { volatile: true, echo: true }).then((ack) => {
  const id: string = ack.id;
  const seq: number | undefined = ack.seq;
  void id, seq;
});
// @ts-expect-error the options are volatile and echo only
void client.publish("project:1", "chat.message", {}, { loud: true });
client.on("*", (env) => void env.from?.user_id);

const any: Envelope = {} as Envelope;
if (any.type === "system.notification") {
  const severity: "info" | "warning" | "error" | "critical" | undefined = any.data.severity;
  void severity;
}

export function Component() {
  useRoom("project:1", {
    "issue.closed": (env) => void env.data.number,
    // @ts-expect-error the handler gets a workflow.failed envelope
    "workflow.failed": (env: Envelope<"pr.created">) => void env,
  });
  useEvent("presence.joined", (env) => void env.data.user_id);
  const send = usePublish("project:1");
  void send("chat.message", { text: "hi" }).then((ack) => void ack.seq);
  const { others, typing, stop }: { others: string[]; typing: () => void; stop: () => void } = useTyping("project:1");
  void [others, typing, stop];
  return null;
}

// AI streams: the follower and the hook.
const followed = client.stream("s1", { room: "project:1" });
followed.on("text", ({ offset, appended, text }) => void [offset + 1, appended.length, text.length]);
followed.on("status", (s) => {
  const st: "open" | "finished" | "failed" | "cancelled" = s;
  void st;
});
void followed.cancel("stop").then((ack) => void ack.length);
void followed.done.then((s) => void s);
// @ts-expect-error not a stream event
followed.on("delta", () => undefined);

export function Viewer() {
  const { text, status, cancel } = useStream("s1");
  void [text.length, status === "finished", cancel()];
  return null;
}
