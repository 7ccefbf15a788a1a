// Writes a copy of @octokit/openapi's api.github.com.json that Prism serves correctly.
//
// A few responses in the description (issue, pull-request, full-repository... 15 in 23.0.2)
// give an example as `{"summary": ..., "value": {"$ref": "#/components/examples/NAME"}}`, where
// NAME is itself an Example Object (`{"value": ..., "x-github-breaking-changes": ...}`). Prism
// then answers with the wrapper instead of the issue. This points such refs at NAME's `value`.
// Paths, methods, parameters and schemas are left exactly as GitHub publishes them.
//
// Usage: node prism-spec.js SOURCE DESTINATION
"use strict";
const fs = require("fs");
const [source, destination] = process.argv.slice(2);
const spec = JSON.parse(fs.readFileSync(source, "utf8"));
let fixed = 0;
function walk(node) {
  if (Array.isArray(node)) return node.forEach(walk);
  if (!node || typeof node !== "object") return;
  const value = node.value;
  if (
    value && typeof value === "object" && !Array.isArray(value) &&
    Object.keys(value).length === 1 && typeof value.$ref === "string" &&
    value.$ref.startsWith("#/components/examples/")
  ) {
    node.value = { $ref: value.$ref + "/value" };
    fixed += 1;
    return;
  }
  Object.values(node).forEach(walk);
}
walk(spec.paths);
fs.writeFileSync(destination, JSON.stringify(spec));
console.log(`prism-spec: ${fixed} example refs pointed at their values; wrote ${destination}`);
