// Writes the part of OpenAI's OpenAPI description that baton's `openai` backend calls (the
// chat completions operation, with every component), as JSON Prism validates requests against.
//
// Served as published, Prism 5 validates no request body of `POST /chat/completions`: it lets
// `{"model": "x"}` and a message with `"role": "bogus"` through. The cause is OpenAPI 3.0's
// `nullable: true` beside `oneOf` (in `stop`, `prediction` and others) in a 3.1 document:
// with it, Prism's schema for the body does not compile and every body "passes". So:
// - `nullable: true` is written the 3.1 way: `"null"` added to `type`, or `{"type": "null"}`
//   added to `oneOf`/`anyOf` (the same meaning: the value may be null);
// - only the chat completions operation is kept, with the components it reaches (the rest,
//   webhooks included, is never called by baton).
// Then Prism answers 422 on any violation. Everything else is left as OpenAI publishes it.
//
// Usage: node openai-prism-spec.js SOURCE.yaml DESTINATION.json  (js-yaml from the npm peers)
"use strict";
const fs = require("fs");
const path = require("path");
const [source, destination] = process.argv.slice(2);
const yaml = require(path.resolve(path.dirname(destination), "node_modules", "js-yaml"));
const spec = yaml.load(fs.readFileSync(source, "utf8"));
const operation = spec.paths["/chat/completions"] && spec.paths["/chat/completions"].post;
if (!operation) {
  console.error(`${source}: no POST /chat/completions`);
  process.exit(1);
}
spec.paths = { "/chat/completions": { post: operation } };
let nullables = 0;
function nullable(node) {
  if (Array.isArray(node)) return node.forEach(nullable);
  if (!node || typeof node !== "object") return;
  if (node.nullable === true) {
    delete node.nullable;
    nullables += 1;
    if (typeof node.type === "string") node.type = [node.type, "null"];
    else if (Array.isArray(node.type)) { if (!node.type.includes("null")) node.type.push("null"); }
    else if (Array.isArray(node.oneOf)) node.oneOf.push({ type: "null" });
    else if (Array.isArray(node.anyOf)) node.anyOf.push({ type: "null" });
    else {
      // `$ref`, `allOf` or no type: "this, or null", as an `anyOf` around what was there.
      const rest = { ...node };
      for (const key of Object.keys(node)) delete node[key];
      node.anyOf = [rest, { type: "null" }];
      return nullable(rest);
    }
  } else if (node.nullable === false) {
    delete node.nullable;
  }
  Object.values(node).forEach(nullable);
}
// Only the components that operation reaches, through any chain of $refs.
const kept = {};
const queue = [operation];
while (queue.length) {
  const node = queue.pop();
  if (Array.isArray(node)) { node.forEach((n) => queue.push(n)); continue; }
  if (!node || typeof node !== "object") continue;
  for (const [key, value] of Object.entries(node)) {
    if (key === "$ref" && typeof value === "string" && value.startsWith("#/components/")) {
      const [, , kind, name] = value.split("/");
      kept[kind] = kept[kind] || {};
      if (!kept[kind][name]) {
        kept[kind][name] = spec.components[kind][name];
        queue.push(kept[kind][name]);
      }
    } else {
      queue.push(value);
    }
  }
}
spec.components = { ...kept, securitySchemes: spec.components.securitySchemes };
// OpenAI's webhooks (a 3.1 section) name components dropped above; baton receives none.
delete spec.webhooks;
nullable(spec.paths);
nullable(spec.components);
fs.writeFileSync(destination, JSON.stringify(spec));
console.log(`wrote ${destination}: POST /chat/completions of ${source} (${nullables} nullable)`);
