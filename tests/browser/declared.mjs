// What a flint.d.ts declares, read with the TypeScript compiler's parser, so run.mjs can hold
// the objects the package really returns to it: { name: [{ member, optional }] } for each
// interface and class (a class's statics under "Name.static"), and `module`: the exported values.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const ts = createRequire(import.meta.url)("../../www/node_modules/typescript");

export function declared(path) {
  const source = ts.createSourceFile(path, readFileSync(path, "utf8"), ts.ScriptTarget.Latest, true);
  const has = (node, kind) => (ts.getModifiers(node) ?? []).some((m) => m.kind === kind);
  const out = { module: [] };
  for (const statement of source.statements) {
    const name = statement.name?.text;
    if (!name) continue;
    const isClass = ts.isClassDeclaration(statement);
    if (has(statement, ts.SyntaxKind.ExportKeyword) && (isClass || ts.isFunctionDeclaration(statement))) out.module.push({ member: name, optional: false });
    if (!isClass && !ts.isInterfaceDeclaration(statement)) continue;
    const members = statement.members.filter((m) => m.name && !has(m, ts.SyntaxKind.PrivateKeyword));
    const entry = (m) => ({ member: m.name.getText(source), optional: Boolean(m.questionToken) });
    out[name] = members.filter((m) => !has(m, ts.SyntaxKind.StaticKeyword)).map(entry);
    if (isClass) out[`${name}.static`] = members.filter((m) => has(m, ts.SyntaxKind.StaticKeyword)).map(entry);
  }
  return out;
}

/** Mismatches between an object's keys and a declaration: undeclared keys, missing required members. */
export function mismatches(members, keys) {
  const names = new Set(members.map((m) => m.member));
  const got = new Set(keys);
  return [
    ...[...got].filter((k) => !names.has(k)).map((k) => `${k} is not declared`),
    ...members.filter((m) => !m.optional && !got.has(m.member)).map((m) => `${m.member} is declared but missing`),
  ];
}
