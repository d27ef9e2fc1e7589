// The TypeScript event types are checked against the JSON Schemas the server publishes at
// GET /api/v1/schema (generated from the server's structs, the one source of truth): every
// event type the server knows has a payload interface here, with the same fields, the same
// required/optional split and a compatible primitive type for each field.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

import { startServer } from "./server.js";

const TYPES_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "types.ts");

let srv;
let schema;
before(async () => {
  srv = await startServer();
  const res = await fetch(`${srv.url}/api/v1/schema`);
  assert.equal(res.status, 200);
  schema = await res.json();
});
after(async () => {
  await srv?.stop();
});

const program = ts.createProgram([TYPES_FILE], { strict: true, target: ts.ScriptTarget.ES2022 });
const checker = program.getTypeChecker();
const source = program.getSourceFile(TYPES_FILE);
const declaration = (name) => source.statements.find((s) => ts.isInterfaceDeclaration(s) && s.name.text === name);

/** `EventPayloads` of src/types.ts as {eventType: {field: {optional, kind}}}, via the compiler. */
function payloadInterfaces() {
  const payloads = declaration("EventPayloads");
  assert.ok(payloads, "src/types.ts declares EventPayloads");
  const result = {};
  for (const member of checker.getTypeAtLocation(payloads).getProperties()) {
    const data = checker.getTypeOfSymbolAtLocation(member, payloads);
    const fields = {};
    for (const field of data.getProperties()) {
      const decl = field.valueDeclaration ?? field.declarations[0];
      const type = checker.getNonNullableType(checker.getTypeOfSymbolAtLocation(field, decl));
      fields[field.name] = { optional: (field.flags & ts.SymbolFlags.Optional) !== 0, kind: kindOf(type) };
    }
    result[member.name] = fields;
  }
  return result;
}

/** A TypeScript type as one of string | number | boolean | object | any. */
function kindOf(type) {
  if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return "any";
  const parts = type.isUnion() ? type.types : [type];
  const kinds = new Set(
    parts.map((t) => {
      if (t.flags & ts.TypeFlags.StringLike) return "string";
      if (t.flags & ts.TypeFlags.NumberLike) return "number";
      if (t.flags & ts.TypeFlags.BooleanLike) return "boolean";
      return "object";
    }),
  );
  return kinds.size === 1 ? [...kinds][0] : "any";
}

/** A JSON Schema property as one of string | number | boolean | object | any. */
function schemaKind(prop, defs) {
  if (prop.$ref) return schemaKind(defs[prop.$ref.split("/").pop()] ?? {}, defs);
  const variants = prop.anyOf ?? prop.oneOf;
  if (variants) {
    const kinds = new Set(variants.filter((v) => v.type !== "null").map((v) => schemaKind(v, defs)));
    return kinds.size === 1 ? [...kinds][0] : "any";
  }
  if (prop.enum) return [...new Set(prop.enum.filter((v) => v !== null).map((v) => typeof v))][0] ?? "any";
  const types = (Array.isArray(prop.type) ? prop.type : [prop.type]).filter((t) => t && t !== "null");
  if (types.length !== 1) return "any";
  return { string: "string", integer: "number", number: "number", boolean: "boolean" }[types[0]] ?? "object";
}

test("every event type of the server has a TypeScript payload type with the same fields", () => {
  const ours = payloadInterfaces();
  const theirs = { ...schema.events, ...schema.server_events };
  assert.ok(Object.keys(schema.events).length >= 18, "the server lists its event types");
  assert.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort(), "the same event types");
  for (const [type, s] of Object.entries(theirs)) {
    const defs = s.$defs ?? s.definitions ?? {};
    const required = new Set(s.required ?? []);
    const expected = {};
    for (const [name, prop] of Object.entries(s.properties ?? {})) {
      expected[name] = { optional: !required.has(name), kind: schemaKind(prop, defs) };
    }
    const actual = ours[type];
    assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), `${type}: field names`);
    for (const [name, want] of Object.entries(expected)) {
      const got = actual[name];
      assert.equal(got.optional, want.optional, `${type}.${name}: optional`);
      // An `any` on either side (unknown JSON, unions) is compatible with anything.
      if (got.kind !== "any" && want.kind !== "any") assert.equal(got.kind, want.kind, `${type}.${name}: type`);
    }
  }
});

test("the envelope type has the schema's fields", () => {
  const decl = declaration("EnvelopeOf");
  const fields = Object.fromEntries(
    checker.getTypeAtLocation(decl).getProperties().map((p) => [p.name, (p.flags & ts.SymbolFlags.Optional) !== 0]),
  );
  const required = new Set(schema.envelope.required);
  const expected = Object.fromEntries(Object.keys(schema.envelope.properties).map((n) => [n, !required.has(n)]));
  assert.deepEqual(fields, expected);
});
