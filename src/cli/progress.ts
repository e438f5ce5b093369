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
