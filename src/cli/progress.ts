import type { LoadProgress } from '../source/load.js';

/**
 * A one-line progress display on stderr for long work, shown when stderr is a TTY or when
 * asked for (--progress); silent otherwise so logs and pipes stay clean.
 */
export class Progress {
  private timer: NodeJS.Timeout | undefined;
  private last = '';
  private readonly tty: boolean;

  constructor(
    readonly enabled: boolean,
    private readonly render: () => string,
  ) {
    this.tty = process.stderr.isTTY === true;
  }

  start(): void {
    if (!this.enabled) return;
    this.timer = setInterval(() => this.draw(), this.tty ? 200 : 2000);
    this.timer.unref();
  }

  private draw(): void {
    const line = this.render();
    if (line === this.last) return;
    this.last = line;
    if (this.tty) process.stderr.write(`\r\x1b[K${line}`);
    else process.stderr.write(`${line}\n`);
  }

  /** Stops and clears the line; when not on a TTY, the final state is printed (once). */
  stop(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.tty) process.stderr.write('\r\x1b[K');
    else this.draw();
  }
}

/** Bytes as a short human string. */
export function human(bytes: bigint | number): string {
  const n = Number(bytes);
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

/**
 * A loader's `onProgress` callback drawing its snapshots like {@link Progress}: on a TTY each
 * new line (the loader calls about every 200 ms) and cleared at the end; otherwise at most one
 * line every 2 s and the final state once. Undefined when not `enabled`.
 */
export function progressPrinter(enabled: boolean): ((p: LoadProgress) => void) | undefined {
  if (!enabled) return undefined;
  const tty = process.stderr.isTTY === true;
  let last = '';
  let drawn = Date.now();
  return (p) => {
    const line = progressLine(p);
    if (tty) {
      if (p.done) {
        process.stderr.write('\r\x1b[K');
        last = '';
      } else if (line !== last) {
        last = line;
        process.stderr.write(`\r\x1b[K${line}`);
      }
      return;
    }
    const now = Date.now();
    if (line === last || (!p.done && now - drawn < 2000)) return;
    last = line;
    drawn = now;
    process.stderr.write(`${line}\n`);
  };
}

function progressLine(p: LoadProgress): string {
  if (p.stage === 'scan') {
    return `scanning ${p.path}: ${p.entries} entries listed, ${p.filesHashed} files hashed (${human(p.bytesHashed)})`;
  }
  if (p.layer === 0) return `reading ${p.spec}`;
  const pct = p.size > 0 ? ` (${Math.floor((100 * p.read) / p.size)}%)` : '';
  return `${p.label} of ${p.layers}: ${human(p.read)} of ${human(p.size)} read${pct}, ${p.entries} entries`;
}
