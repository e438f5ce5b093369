/**
 * The content hand-off of the directory source: regular files too large to be hashed while
 * their directory is read wait here for `hashFile`, at most `limit` calls outstanding, while
 * the walk goes on. A FIFO of plain records (no promise per file): 500k-file trees stay small
 * and linear.
 */
import type { ExternalContent } from './entries.js';
import { RepoError } from '../../repo/repo.js';
import { scanError, type DirAnchor } from './paths.js';

export type HashFile = (path: Buffer, size: bigint) => Promise<Buffer>;

interface HashTask {
  /** Where the id goes (a leaf's content, made for this file by the scan). */
  content: ExternalContent;
  /** The path to open (through /proc/self/fd/N under a long directory). */
  access: Buffer;
  /** The real path, for messages. */
  real: Buffer;
  anchor: DirAnchor | undefined;
}

export class HashQueue {
  private queue: (HashTask | undefined)[] = [];
  private head = 0;
  private running = 0;
  private wake: (() => void) | undefined;
  /** The first failure of a hash (the scan reports it). */
  error: unknown;
  private aborted = false;

  constructor(
    private readonly hashFile: HashFile,
    private readonly limit: number,
  ) {}

  /** A hash failed or the walk gave up: nothing more is started. */
  get stopped(): boolean {
    return this.error !== undefined || this.aborted;
  }

  /** Files waiting for a slot. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  /** Queues a file to get its id into `content`; `anchor` is held until it is hashed. */
  add(content: ExternalContent, access: Buffer, real: Buffer, anchor: DirAnchor | undefined): void {
    anchor?.retain();
    this.queue.push({ content, access, real, anchor });
    if (this.running < this.limit) this.pump();
  }

  /** Skips what is queued from now on (the walk failed). */
  abort(): void {
    this.aborted = true;
  }

  /** Waits until fewer than `max` files are queued (0: until every hash has finished). */
  async drain(max: number): Promise<void> {
    while (this.running > 0 || this.queue.length - this.head > max) {
      if (this.stopped) {
        // Queued files are skipped, releasing what they hold.
        for (let i = this.head; i < this.queue.length; i++) this.queue[i]?.anchor?.release();
        this.queue = [];
        this.head = 0;
        if (this.running === 0) return;
      }
      if (max > 0 && this.queue.length - this.head <= max) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private async run(t: HashTask): Promise<void> {
    try {
      if (this.stopped) return;
      t.content.id = await this.hashFile(t.access, t.content.size);
    } catch (e) {
      // A repository error (writing the copy) is not about this file: keep it as it is.
      this.error ??= e instanceof RepoError ? e : scanError('cannot hash', t.real, e);
    } finally {
      this.running--;
      t.anchor?.release();
      this.pump();
      this.notify();
    }
  }

  private pump(): void {
    while (this.running < this.limit && this.head < this.queue.length) {
      const t = this.queue[this.head]!;
      this.queue[this.head++] = undefined;
      this.running++;
      void this.run(t);
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}
