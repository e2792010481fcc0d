// Decoding helpers that reproduce how Go's encoding/json fills a struct, which is how
// flanneld reads the network config and the lease values:
//
// * field names match case-insensitively (an exact match is not required);
// * unknown fields are ignored;
// * when several keys map to one field, the last one wins;
// * a JSON null leaves a non-pointer field untouched (as if absent);
// * a value of the wrong JSON type is an error naming the struct field.

export type JsonValue = null | boolean | number | string | JsonValue[] | { [k: string]: JsonValue };
export type JsonObject = { [k: string]: JsonValue };

export class GoJsonError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GoJsonError';
  }
}

/** The name Go uses for a JSON value's kind in "cannot unmarshal X into ..." errors. */
export function jsonKind(v: JsonValue): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  switch (typeof v) {
    case 'string':
      return 'string';
    case 'number':
      return 'number';
    case 'boolean':
      return 'bool';
    default:
      return 'object';
  }
}

export function isJsonObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Bounds on a JSON text read from another writer (etcd, an API server). */
export interface JsonLimits {
  /** Longest text accepted, in UTF-16 code units (about bytes for JSON). */
  readonly maxLength: number;
  /** Deepest nesting of arrays and objects accepted. */
  readonly maxDepth: number;
}

/**
 * Generous for any network config (flannel's are well under a kilobyte), small enough that
 * parsing one takes a few milliseconds and nothing recurses deeply.
 */
export const DEFAULT_JSON_LIMITS: JsonLimits = { maxLength: 64 * 1024, maxDepth: 64 };

/**
 * Deepest nesting of arrays and objects in a JSON text, stopping once it passes `limit`. One
 * pass over the text, brackets inside strings not counted; on malformed text the figure is
 * only an estimate, which is all a bound needs (JSON.parse rejects the syntax after).
 */
export function jsonDepth(text: string, limit: number): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: the next character is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > deepest && (deepest = depth) > limit) return deepest;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return deepest;
}

/**
 * JSON.parse typed as JsonValue, for text from another writer: the length and the nesting
 * depth are bounded before parsing (deep nesting would overflow the stack of every recursive
 * step after it), and any failure is a GoJsonError with a short message.
 */
export function parseJson(text: string, limits: JsonLimits = DEFAULT_JSON_LIMITS): JsonValue {
  if (text.length > limits.maxLength) {
    throw new GoJsonError(`invalid JSON: ${text.length} bytes is more than the ${limits.maxLength} accepted`);
  }
  if (jsonDepth(text, limits.maxDepth) > limits.maxDepth) {
    throw new GoJsonError(`invalid JSON: nested more than ${limits.maxDepth} levels deep`);
  }
  try {
    return JSON.parse(text) as JsonValue;
  } catch (e) {
    throw new GoJsonError(`invalid JSON: ${(e as Error).message}`);
  }
}

/**
 * Fields of a Go struct being decoded. `struct` is the Go type name used in messages
 * (`Config`), `fields` the canonical field names.
 */
export class GoStruct {
  private readonly values = new Map<string, JsonValue>();
  /** Keys of the object that match no field (Go drops them without a word). */
  readonly ignored: string[] = [];

  constructor(
    readonly struct: string,
    obj: JsonValue,
    fields: readonly string[],
  ) {
    if (obj === null) return; // decoding null into a struct is a no-op in Go
    if (!isJsonObject(obj)) {
      throw new GoJsonError(`json: cannot unmarshal ${jsonKind(obj)} into Go value of type ${struct}`);
    }
    const byFold = new Map<string, string>();
    for (const f of fields) byFold.set(f.toLowerCase(), f);
    for (const [k, v] of Object.entries(obj)) {
      const f = fields.includes(k) ? k : byFold.get(k.toLowerCase());
      if (f !== undefined) this.values.set(f, v);
      else this.ignored.push(k);
    }
  }

  /** True if the field was present with a non-null value. */
  has(field: string): boolean {
    const v = this.values.get(field);
    return v !== undefined && v !== null;
  }

  /** The raw value (undefined when absent; null when written as null). */
  raw(field: string): JsonValue | undefined {
    return this.values.get(field);
  }

  private typeError(field: string, v: JsonValue, goType: string): GoJsonError {
    const what = typeof v === 'number' ? `number ${String(v)}` : jsonKind(v);
    return new GoJsonError(
      `json: cannot unmarshal ${what} into Go struct field ${this.struct}.${field} of type ${goType}`,
    );
  }

  string(field: string): string | undefined {
    const v = this.values.get(field);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') throw this.typeError(field, v, 'string');
    return v;
  }

  bool(field: string): boolean | undefined {
    const v = this.values.get(field);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') throw this.typeError(field, v, 'bool');
    return v;
  }

  /** An integer in [min, max]; goType names the Go type in errors (int, uint, uint32...). */
  integer(field: string, goType: string, min: number, max: number): number | undefined {
    const v = this.values.get(field);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw this.typeError(field, v, goType);
    }
    return v;
  }
}

export const INT_MIN = -(2 ** 53 - 1);
export const INT_MAX = 2 ** 53 - 1;

// A number, true, false or null, matched where the scan stands (sticky: no search ahead).
const LITERAL = /true|false|null|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/** Where a JSON text first goes wrong, for an error message an operator can act on. */
export interface JsonSyntaxError {
  /** Offset of the offending character (text.length when the text ends too early). */
  readonly offset: number;
  readonly line: number;
  readonly column: number;
  /** The object keys leading to it (`Backend.Type`); "" at the top level. */
  readonly path: string;
  readonly problem: string;
}

/**
 * Finds the first syntax error of a JSON text (null when there is none). Recursive descent,
 * so the caller bounds the depth first (parseJson does).
 */
export function findJsonSyntaxError(text: string): JsonSyntaxError | null {
  let i = 0;
  const keys: string[] = [];
  class Stop extends Error {}
  let problem = '';
  const fail = (what: string): never => {
    problem = i >= text.length ? `the text ends where ${what} should be` : `${JSON.stringify(text[i])} where ${what} should be`;
    throw new Stop();
  };
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i] as string)) i++;
  };
  const str = (): string => {
    const start = i;
    i++;
    while (i < text.length && text[i] !== '"') {
      const c = text.charCodeAt(i);
      if (c < 0x20) fail('a string character (control characters must be escaped)');
      i += text[i] === '\\' ? 2 : 1;
    }
    if (i >= text.length) fail('the closing quote of a string');
    i++;
    try {
      return JSON.parse(text.slice(start, i)) as string;
    } catch {
      i = start;
      return fail('a string with valid escapes');
    }
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') { i++; return; }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('a quoted key');
        keys.push(str());
        ws();
        if (text[i] !== ':') fail("':' after the key");
        i++;
        value();
        ws();
        if (text[i] !== ',' && text[i] !== '}') fail("',' or '}'"); // still under this key
        keys.pop();
        if (text[i++] === '}') return;
      }
    }
    if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') { i++; return; }
      for (;;) {
        value();
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === ']') { i++; return; }
        fail("',' or ']'");
      }
    }
    if (c === '"') { str(); return; }
    LITERAL.lastIndex = i;
    if (!LITERAL.test(text)) fail('a value');
    i = LITERAL.lastIndex;
  };
  try {
    value();
    ws();
    if (i < text.length) fail('the end of the text');
    return null;
  } catch (e) {
    if (!(e instanceof Stop)) throw e;
    const before = text.slice(0, i);
    const line = before.split('\n').length;
    const column = i - before.lastIndexOf('\n');
    return { offset: i, line, column, path: keys.join('.'), problem };
  }
}
