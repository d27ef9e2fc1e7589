// The fenced code blocks of the repository's Markdown docs, for the tests that run them as written.

import fs from "node:fs";
import path from "node:path";

import { REPO_ROOT } from "../../harness/js/index.mjs";

/** The fenced blocks of `file` in one of `langs`, with the heading they are under. */
export function blocks(file, langs) {
  const lines = fs.readFileSync(path.join(REPO_ROOT, file), "utf8").split("\n");
  const found = [];
  let heading = "";
  for (let i = 0; i < lines.length; i++) {
    if (/^#{1,4} /.test(lines[i])) heading = lines[i].replace(/^#+ /, "");
    const open = /^```(\w+)\s*$/.exec(lines[i]);
    if (!open) continue;
    const end = lines.indexOf("```", i + 1);
    if (langs.includes(open[1])) {
      found.push({ file, line: i + 1, lang: open[1], heading, code: lines.slice(i + 1, end).join("\n") });
    }
    i = end;
  }
  return found;
}
