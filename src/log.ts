// A tiny leveled logger in the spirit of klog (which flanneld uses).
//
//   I1121 00:51:02.123456   12345 subnet] Allocated lease 10.5.72.0/24
//   ^severity, month+day, time with microseconds, pid, component, message
//
// Info/Warning/Error always print; log.v(n).info(...) prints only when the verbosity (-v)
// is at least n, as klog's V(n).Infof. Everything goes to stderr (or a given sink).

export type Severity = 'I' | 'W' | 'E';

export interface LogSink {
  write(line: string): unknown;
}

export interface VerboseLogger {
  readonly enabled: boolean;
  info(msg: string): void;
}

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  /** klog V(level): logs only when the verbosity is >= level. */
  v(level: number): VerboseLogger;
  /** A logger with the same sink and verbosity, tagged with another component name. */
  child(component: string): Logger;
  /** The current verbosity (shared by the parent and all children). */
  readonly verbosity: number;
  setVerbosity(level: number): void;
}

export interface LoggerOptions {
  component?: string;
  verbosity?: number;
  sink?: LogSink;
  /** Clock for the timestamps (tests): a Date, or microseconds since the epoch. */
  now?: () => Date | number;
  pid?: number;
}

interface Shared {
  verbosity: number;
  sink: LogSink;
  now: () => Date | number;
  pid: number;
}

const pad = (n: number, w: number): string => String(n).padStart(w, '0');

// Date.now() has milliseconds only; performance.now() has microseconds but is monotonic, so
// timeOrigin + now() drifts from the wall clock (NTP slews, clock steps). Sub-millisecond digits
// come from the monotonic clock, anchored again whenever it leaves the wall clock's millisecond.
let origin = performance.timeOrigin;

/** Microseconds since the epoch: the wall clock's millisecond, refined by the monotonic clock. */
export function wallClockMicros(): number {
  const wall = Date.now();
  const mono = performance.now();
  let ms = origin + mono;
  if (ms < wall || ms >= wall + 1) {
    origin = wall - mono;
    ms = wall;
  }
  return Math.floor(ms * 1000);
}

/**
 * The klog-style header for one line, e.g. `I1121 00:51:02.123456   12345 subnet] `, for a
 * Date (millisecond precision) or microseconds since the epoch.
 */
export function formatHeader(sev: Severity, t: Date | number, pid: number, component: string): string {
  const us = typeof t === 'number' ? t : t.getTime() * 1000;
  const d = new Date(Math.floor(us / 1000));
  const micros = pad(((us % 1_000_000) + 1_000_000) % 1_000_000, 6);
  const date = `${pad(d.getMonth() + 1, 2)}${pad(d.getDate(), 2)}`;
  const time = `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.${micros}`;
  return `${sev}${date} ${time} ${String(pid).padStart(7, ' ')} ${component}] `;
}

class KLogger implements Logger {
  constructor(
    private readonly shared: Shared,
    private readonly component: string,
  ) {}

  private emit(sev: Severity, msg: string): void {
    const head = formatHeader(sev, this.shared.now(), this.shared.pid, this.component);
    // One record per line, so that journald and grep keep working on multi-line messages.
    const body = msg.replace(/\n+$/, '').split('\n').join('\n' + ' '.repeat(4));
    this.shared.sink.write(head + body + '\n');
  }

  info(msg: string): void {
    this.emit('I', msg);
  }
  warn(msg: string): void {
    this.emit('W', msg);
  }
  error(msg: string): void {
    this.emit('E', msg);
  }
  v(level: number): VerboseLogger {
    const enabled = this.shared.verbosity >= level;
    return {
      enabled,
      info: enabled ? (m: string) => this.emit('I', m) : () => undefined,
    };
  }
  child(component: string): Logger {
    return new KLogger(this.shared, component);
  }
  get verbosity(): number {
    return this.shared.verbosity;
  }
  setVerbosity(level: number): void {
    this.shared.verbosity = level;
  }
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const shared: Shared = {
    verbosity: opts.verbosity ?? 0,
    sink: opts.sink ?? process.stderr,
    now: opts.now ?? wallClockMicros,
    pid: opts.pid ?? process.pid,
  };
  return new KLogger(shared, opts.component ?? 'linen');
}

/** A logger that drops everything (tests and library defaults). */
export const nullLogger: Logger = createLogger({ sink: { write: () => true }, verbosity: -1 });

/** Collects lines in memory; for tests that assert on log output. */
export function memoryLogger(verbosity = 10): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const log = createLogger({
    verbosity,
    sink: {
      write: (l: string) => {
        lines.push(l.replace(/\n$/, ''));
        return true;
      },
    },
  });
  return { log, lines };
}

/** The process-wide default logger (stderr). The daemon sets its verbosity from -v. */
export const log: Logger = createLogger();
