/**
 * The fuzzer's executor thread: runs one target on inputs the main thread sends and measures
 * which code blocks each input reached, with V8's precise block coverage (call counts) read
 * through node:inspector. Running in a worker lets the main thread stop an input that hangs
 * (Worker.terminate interrupts even a synchronous loop) or grows memory past the bound.
 *
 * Features: (script, block, hit-count bucket) as in AFL. V8 reports a block only when its count
 * differs from the enclosing range's, so every block seen once is remembered and its count on
 * later runs is taken from the innermost reported range containing it.
 */
import inspector from 'node:inspector';
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { Finding, firstFrame, type FuzzTarget } from './target.js';

export interface WorkerInit {
  targetFile: string;
  /** Features already known (after a restart). */
  known: string[];
}

export type WorkerRequest = { id: number; input: Uint8Array; coverage: boolean };
export type WorkerReply =
  | { id: number; ok: true; fresh: string[]; ms: number }
  | { id: number; ok: false; kind: string; message: string; frame?: string; ms: number; fresh: string[] };

/** Code whose coverage guides the fuzzer: the project's compiled sources and the zstd decoder. */
function interesting(url: string): string | undefined {
  const i = url.indexOf('/build/src/');
  if (i !== -1) return url.slice(i + 7);
  const j = url.indexOf('/node_modules/fzstd/');
  if (j !== -1) return url.slice(j + 14);
  return undefined;
}

function bucket(n: number): number {
  if (n <= 3) return n;
  if (n < 8) return 4;
  if (n < 16) return 5;
  if (n < 32) return 6;
  if (n < 128) return 7;
  return 8;
}

interface Range {
  startOffset: number;
  endOffset: number;
  count: number;
}

class Coverage {
  private readonly session = new inspector.Session();
  /** script -> function start -> "start:end" -> [start, end] */
  private readonly blocks = new Map<string, Map<number, Map<string, [number, number]>>>();
  readonly seen: Set<string>;

  constructor(known: string[]) {
    this.seen = new Set(known);
    this.session.connect();
    this.post('Profiler.enable');
    this.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
  }

  private post(method: string, params?: object): unknown {
    let result: unknown;
    let error: Error | null = null;
    // The in-thread session answers synchronously.
    this.session.post(method, params, (e, r) => {
      error = e;
      result = r;
    });
    if (error) throw error;
    return result;
  }

  /** Features reached since the last call that were never seen before. */
  take(): string[] {
    const res = this.post('Profiler.takePreciseCoverage') as {
      result: { url: string; functions: { ranges: Range[] }[] }[];
    };
    const fresh: string[] = [];
    for (const sc of res.result) {
      const name = interesting(sc.url);
      if (name === undefined) continue;
      let fns = this.blocks.get(name);
      if (!fns) this.blocks.set(name, (fns = new Map()));
      for (const f of sc.functions) {
        const rs = f.ranges;
        if (rs.length === 0 || rs[0].count === 0) continue;
        let known = fns.get(rs[0].startOffset);
        if (!known) fns.set(rs[0].startOffset, (known = new Map()));
        for (const r of rs) {
          const k = `${r.startOffset}:${r.endOffset}`;
          if (!known.has(k)) known.set(k, [r.startOffset, r.endOffset]);
        }
        for (const [k, [s, e]] of known) {
          let count = 0;
          let best = Infinity;
          for (const r of rs) {
            if (r.startOffset <= s && r.endOffset >= e && r.endOffset - r.startOffset < best) {
              best = r.endOffset - r.startOffset;
              count = r.count;
            }
          }
          if (count === 0) continue;
          const feat = `${name}:${k}:${bucket(count)}`;
          if (!this.seen.has(feat)) {
            this.seen.add(feat);
            fresh.push(feat);
          }
        }
      }
    }
    return fresh;
  }
}

async function main(): Promise<void> {
  const init = workerData as WorkerInit;
  // Coverage first: functions compiled before it is on would report no blocks.
  const cov = new Coverage(init.known);
  const mod = (await import(pathToFileURL(init.targetFile).href)) as { target: FuzzTarget };
  const target = mod.target;
  cov.take(); // module loading is not the input's doing
  parentPort!.on('message', (req: WorkerRequest) => {
    const t0 = performance.now();
    const input = Buffer.from(req.input.buffer, req.input.byteOffset, req.input.byteLength);
    const done = (e?: unknown): void => {
      const fresh = req.coverage ? cov.take() : [];
      const ms = performance.now() - t0;
      if (e === undefined) {
        parentPort!.postMessage({ id: req.id, ok: true, fresh, ms } satisfies WorkerReply);
        return;
      }
      const err = e instanceof Error ? e : new Error(String(e));
      const kind = err instanceof Finding ? err.kind : 'untyped-error';
      const message = err instanceof Finding ? err.message : `${err.constructor.name}: ${err.message.slice(0, 300)}`;
      parentPort!.postMessage({ id: req.id, ok: false, kind, message, frame: firstFrame(err), ms, fresh } satisfies WorkerReply);
    };
    try {
      const r = target.run(input);
      if (r instanceof Promise) r.then(() => done(), done);
      else done();
    } catch (e) {
      done(e);
    }
  });
  parentPort!.postMessage({ ready: true });
}

void main();
