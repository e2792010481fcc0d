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

/** JSON.parse typed as JsonValue; throws GoJsonError with a short message on bad syntax. */
export function parseJson(text: string): JsonValue {
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
