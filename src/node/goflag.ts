// Go's flag package and strconv as flanneld's command line goes through them: the syntax of
// flag.FlagSet.Parse (-flag and --flag, -flag=value, -flag value except for booleans, "--"
// ends the flags, -h and --help), flag.Value.Set for strings, booleans (strconv.ParseBool),
// ints (strconv.ParseInt, base 0 or 10) and repeatable lists, and where each value came from.
// It knows no flag of its own: flags.ts defines them and what they mean.

export class FlagError extends Error {
  constructor(
    message: string,
    /** 2 for command-line syntax (as Go's flag package), 1 for values flanneld rejects later. */
    readonly exitCode: 1 | 2,
  ) {
    super(message);
    this.name = 'FlagError';
  }
}

export type FlagKind = 'string' | 'bool' | 'int' | 'list';
export type FlagValue = string | boolean | number | string[];
export type FlagSource = 'default' | 'flag' | 'env';

/** What parsing needs to know of a flag. */
export interface GoFlag {
  readonly name: string;
  readonly kind: FlagKind;
  readonly def: FlagValue;
  /** Go's parse base for ints (flag.IntVar uses 0: 0x.., 0o.., 0b.., leading 0 = octal). */
  readonly base?: 0 | 10;
}

/** strconv.ParseBool */
export function parseGoBool(s: string): boolean | null {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(s)) return false;
  return null;
}

/** strconv.ParseInt(s, base, 64) for base 0 (Go literal prefixes, underscores) or 10. */
export function parseGoInt(s: string, base: 0 | 10 = 0): number | null {
  let t = s;
  let neg = false;
  if (t.startsWith('+') || t.startsWith('-')) {
    neg = t[0] === '-';
    t = t.slice(1);
  }
  if (t === '') return null;
  let radix = 10;
  let digits = t;
  let prefixed = false;
  if (base === 0) {
    const p = t.slice(0, 2).toLowerCase();
    if (p === '0x') [radix, digits, prefixed] = [16, t.slice(2), true];
    else if (p === '0o') [radix, digits, prefixed] = [8, t.slice(2), true];
    else if (p === '0b') [radix, digits, prefixed] = [2, t.slice(2), true];
    else if (t.length > 1 && t[0] === '0') [radix, digits, prefixed] = [8, t.slice(1), true];
    if (digits.includes('_')) {
      // Go: underscores only between digits (or right after a base prefix)
      if (/__|_$/.test(digits) || (!prefixed && digits.startsWith('_'))) return null;
      digits = digits.replace(/_/g, '');
    }
  }
  if (digits === '') return null;
  const alphabet = '0123456789abcdef'.slice(0, radix);
  let v = 0n;
  for (const c of digits.toLowerCase()) {
    const d = alphabet.indexOf(c);
    if (d < 0) return null;
    v = v * BigInt(radix) + BigInt(d);
  }
  if (neg) v = -v;
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return Number(v);
}

export class FlagSet<F extends GoFlag> {
  readonly values = new Map<string, FlagValue>();
  readonly sources = new Map<string, FlagSource>();
  private readonly byName: ReadonlyMap<string, F>;

  constructor(readonly flags: readonly F[]) {
    this.byName = new Map(flags.map((f) => [f.name, f]));
    for (const f of flags) {
      this.values.set(f.name, Array.isArray(f.def) ? [...f.def] : f.def);
      this.sources.set(f.name, 'default');
    }
  }

  /** flag.Value.Set; returns an error text (Go's) or null. */
  set(f: F, raw: string, source: Exclude<FlagSource, 'default'>): string | null {
    switch (f.kind) {
      case 'bool': {
        const b = parseGoBool(raw);
        if (b === null) return 'parse error';
        this.values.set(f.name, b);
        break;
      }
      case 'int': {
        const n = parseGoInt(raw, f.base ?? 0);
        if (n === null) return 'parse error';
        this.values.set(f.name, n);
        break;
      }
      case 'list': {
        const prev = this.sources.get(f.name) === source ? (this.values.get(f.name) as string[]) : [];
        this.values.set(f.name, [...prev, raw]);
        break;
      }
      default:
        this.values.set(f.name, raw);
    }
    this.sources.set(f.name, source);
    return null;
  }

  str(name: string): string {
    return this.values.get(name) as string;
  }
  bool(name: string): boolean {
    return this.values.get(name) as boolean;
  }
  int(name: string): number {
    return this.values.get(name) as number;
  }
  list(name: string): string[] {
    return this.values.get(name) as string[];
  }

  /** The flag of this name, if defined. */
  lookup(name: string): F | undefined {
    return this.byName.get(name);
  }

  /**
   * flag.FlagSet.Parse over argv (without program name): sets each flag given, stops at "--".
   * 'help' for -h / --help (when not defined as flags). Throws FlagError (exit code 2) on bad
   * syntax, an unknown flag, a bad value, and, unlike Go, on any positional argument.
   */
  parse(argv: readonly string[]): 'help' | 'parsed' {
    const args = [...argv];
    while (args.length > 0) {
      const s = args[0]!;
      if (s.length < 2 || s[0] !== '-') {
        throw new FlagError(
          `unexpected argument ${JSON.stringify(s)}: linen takes no positional arguments` +
            (['true', 'false'].includes(s) ? ' (boolean flags take =value, e.g. --ip-masq=false)' : ''),
          2,
        );
      }
      let minuses = 1;
      if (s[1] === '-') {
        minuses = 2;
        if (s.length === 2) {
          args.shift();
          if (args.length > 0) throw new FlagError(`unexpected argument ${JSON.stringify(args[0])} after "--": linen takes no positional arguments`, 2);
          break;
        }
      }
      let name = s.slice(minuses);
      if (name.length === 0 || name[0] === '-' || name[0] === '=') throw new FlagError(`bad flag syntax: ${s}`, 2);
      args.shift();
      let hasValue = false;
      let value = '';
      const eq = name.indexOf('=', 1);
      if (eq > 0) {
        value = name.slice(eq + 1);
        hasValue = true;
        name = name.slice(0, eq);
      }
      const f = this.byName.get(name);
      if (f === undefined) {
        if (name === 'help' || name === 'h') return 'help';
        throw new FlagError(`flag provided but not defined: -${name} (see --help)`, 2);
      }
      if (f.kind === 'bool') {
        const err = this.set(f, hasValue ? value : 'true', 'flag');
        if (err !== null) throw new FlagError(`invalid boolean value ${JSON.stringify(value)} for -${name}: ${err}`, 2);
        continue;
      }
      if (!hasValue && args.length > 0) {
        hasValue = true;
        value = args.shift()!;
      }
      if (!hasValue) throw new FlagError(`flag needs an argument: -${name}`, 2);
      const err = this.set(f, value, 'flag');
      if (err !== null) throw new FlagError(`invalid value ${JSON.stringify(value)} for flag -${name}: ${err}`, 2);
    }
    return 'parsed';
  }
}
