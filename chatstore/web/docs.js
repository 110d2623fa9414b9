// /docs: the API reference, rendered from /openapi.json by this one module (no
// CDN, no build). Every string of the document goes in as text; `backticks`
// in descriptions become <code> elements.

const root = document.getElementById("docs");

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

function prose(text, tag = "p") {
  const node = el(tag);
  text.split(/(`[^`]*`)/).forEach((piece, index) => {
    node.append(index % 2 ? el("code", {}, piece.slice(1, -1)) : piece);
  });
  return node;
}

const refName = (ref) => ref.split("/").pop();

// A schema in one line: a link for a $ref, else its type and constraints.
function schemaSummary(schema) {
  if (!schema) return "";
  if (schema.$ref) return el("a", { href: `#schema-${refName(schema.$ref)}` }, refName(schema.$ref));
  const span = el("span");
  const variants = schema.anyOf || schema.oneOf;
  if (variants) {
    variants.forEach((variant, index) => {
      if (index) span.append(" | ");
      span.append(schemaSummary(variant));
    });
    return span;
  }
  let text = schema.type === "array" ? "" : String(schema.type ?? "any");
  if (schema.type === "array") {
    span.append("array of ", schemaSummary(schema.items));
    text = "";
  }
  const facts = [];
  if (schema.format) facts.push(schema.format);
  if (schema.enum) facts.push(`one of ${schema.enum.join(", ")}`);
  if (schema.minimum !== undefined) facts.push(`≥ ${schema.minimum}`);
  // JSON numbers are doubles here: a bigint's 2^63 - 1 would print as ...776000.
  if (schema.maximum !== undefined) {
    facts.push(`≤ ${Number.isSafeInteger(schema.maximum) ? schema.maximum : "2⁶³ − 1"}`);
  }
  if (schema.maxLength !== undefined) facts.push(`≤ ${schema.maxLength} chars`);
  if (schema.default !== undefined) facts.push(`default ${JSON.stringify(schema.default)}`);
  span.append(text + (facts.length ? ` (${facts.join("; ")})` : ""));
  return span;
}

function table(head, rows) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, ...head.map((cell) => el("th", { scope: "col" }, cell)))),
    el("tbody", {}, ...rows.map((row) => el("tr", {}, ...row.map((cell) => el("td", {}, cell))))),
  );
}

function contentList(content) {
  const list = el("ul");
  for (const [type, media] of Object.entries(content || {})) {
    list.append(el("li", {}, el("code", {}, type), " ", schemaSummary(media.schema)));
  }
  return list;
}

function operation(spec, path, method, op) {
  const id = op.operationId || `${method}-${path}`;
  const section = el(
    "section",
    { class: "operation", id },
    el("h3", {}, el("span", { class: "method" }, method), el("code", {}, path), op.summary || ""),
  );
  if (op.description) section.append(prose(op.description));
  section.append(
    el("p", {}, op.security ? "Needs a session (bearer token or cookie)." : "No session needed."),
  );
  if (op.parameters?.length) {
    section.append(
      el("h4", {}, "Parameters"),
      table(
        ["Name", "In", "Schema", "Description"],
        op.parameters.map((p) => [
          el("code", {}, p.name + (p.required ? "" : "?")),
          p.in,
          schemaSummary(p.schema),
          p.description ? prose(p.description, "span") : "",
        ]),
      ),
    );
  }
  if (op.requestBody) {
    section.append(el("h4", {}, "Request body"), contentList(op.requestBody.content));
  }
  const responses = Object.entries(op.responses || {}).map(([status, response]) => {
    const resolved = response.$ref
      ? spec.components.responses[refName(response.$ref)]
      : response;
    return [
      el("code", {}, status),
      prose(resolved.description || "", "span"),
      resolved.content ? contentList(resolved.content) : "",
    ];
  });
  section.append(el("h4", {}, "Responses"), table(["Status", "Meaning", "Body"], responses));
  return section;
}

function render(spec) {
  const info = spec.info;
  root.append(el("h1", {}, `${info.title} ${info.version}`));
  if (info.description) root.append(prose(info.description));
  const byTag = new Map();
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = op.tags?.[0] || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, op]);
    }
  }
  const contents = el("ul");
  root.append(el("nav", { "aria-label": "Contents" }, el("h2", {}, "Operations"), contents));
  for (const [tag, ops] of byTag) {
    root.append(el("h2", { id: `tag-${tag}` }, tag));
    for (const [path, method, op] of ops) {
      const section = operation(spec, path, method, op);
      root.append(section);
      contents.append(
        el("li", {}, el("a", { href: `#${section.id}` }, `${method.toUpperCase()} ${path}`)),
      );
    }
  }
  root.append(el("h2", { id: "schemas" }, "Schemas"));
  for (const [name, schema] of Object.entries(spec.components?.schemas || {})) {
    root.append(
      el("h3", { id: `schema-${name}` }, name),
      el("pre", {}, JSON.stringify(schema, null, 2)),
    );
  }
}

fetch("/openapi.json", { headers: { Accept: "application/json" } })
  .then((response) => {
    if (!response.ok) throw new Error(`/openapi.json answered ${response.status}`);
    return response.json();
  })
  .then((spec) => {
    render(spec);
    root.querySelector("#docs-status").remove();
    if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
  })
  .catch((error) => {
    root.querySelector("#docs-status").textContent = `The API reference did not load: ${error.message}`;
  });
