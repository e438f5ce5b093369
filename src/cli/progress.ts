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

/** The line for a loader's progress snapshot. */
export function describeLoad(p: LoadProgress): string {
  if (p.stage === 'scan') return `scanning ${p.path}: ${p.entries} entries listed, ${p.filesHashed} files hashed (${human(p.bytesHashed)})`;
  if (p.layer === 0) return `reading ${p.spec}`;
  const pct = p.size > 0 ? ` (${Math.floor((100 * p.read) / p.size)}%)` : '';
  return `${p.label} of ${p.layers}: ${human(p.read)} of ${human(p.size)} read${pct}, ${p.entries} entries`;
}

/**
 * Runs `load` with the loader's progress shown (when `enabled`): `load` gets the callback to pass
 * as `onProgress`; the line shows the latest snapshot and is cleared (TTY) or printed a last
 * time (otherwise) when `load` ends.
 */
export async function withLoadProgress<T>(enabled: boolean, load: (onProgress?: (p: LoadProgress) => void) => Promise<T>): Promise<T> {
  if (!enabled) return load(undefined);
  let last: LoadProgress | undefined;
  const progress = new Progress(true, () => (last ? describeLoad(last) : ''));
  progress.start();
  try {
    return await load((p) => {
      last = p;
    });
  } finally {
    progress.stop();
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
