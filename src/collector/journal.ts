// Append-only segment files under --data-dir. A record is [u32 length][u32 CRC32][payload], little
// endian. Appends are group-committed (one write + fdatasync for everything queued) and resolve
// only when durable, so an acknowledgement never covers data a crash can take away. At start-up a
// damaged tail (torn write, bit rot) is detected, cut off and counted; it never stops start-up.
import fs from 'node:fs/promises';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import type { Logger } from '../common/log.js';

const HEADER_BYTES = 8;
/** Larger lengths are damage, not records: a batch's single event is far smaller. */
const MAX_RECORD_BYTES = 16 << 20;
const SEGMENT_NAME = /^segment-(\d{12})\.log$/;

export interface JournalEntry {
  payload: Uint8Array;
  /** Time the record is about, for age-based retention. */
  timeMs: number;
}

export interface Retention {
  maxRecords: number;
  maxAgeMs: number;
  /** Bytes on disk (records with their headers): huge records cannot fill the volume. */
  maxBytes: number;
}

export interface RecoveryResult {
  records: number;
  damagedRecords: number;
  damagedBytes: number;
}

interface Segment {
  file: string;
  records: number;
  bytes: number;
  newestMs: number;
}

interface PendingAppend {
  entries: JournalEntry[];
  resolve: () => void;
  reject: (err: Error) => void;
}

const segmentName = (n: number) => `segment-${String(n).padStart(12, '0')}.log`;

export function encodeRecord(payload: Uint8Array): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32LE(payload.length, 0);
  header.writeUInt32LE(crc32(payload), 4);
  return Buffer.concat([header, payload]);
}

export class Journal {
  private segments: Segment[] = [];
  private current: fs.FileHandle | null = null;
  private nextSegment = 1;
  private pending: PendingAppend[] = [];
  private writing = false;
  private closed = false;

  private constructor(
    private readonly dir: string,
    private readonly retention: Retention,
    private readonly segmentSize: { records: number; bytes: number },
    private readonly log: Logger,
  ) {}

  /**
   * Reads every segment in order, handing each intact payload to `onRecord` (which returns the
   * record's time, or null if it cannot be decoded: counted as damaged), then opens a new segment.
   */
  static async open(
    options: { dir: string; retention: Retention; segmentSize: { records: number; bytes: number }; log: Logger },
    onRecord: (payload: Uint8Array) => number | null,
  ): Promise<{ journal: Journal; recovery: RecoveryResult }> {
    const journal = new Journal(options.dir, options.retention, options.segmentSize, options.log);
    await fs.mkdir(options.dir, { recursive: true });
    const recovery = await journal.recover(onRecord);
    await journal.rotate();
    await journal.enforceRetention();
    return { journal, recovery };
  }

  private async recover(onRecord: (payload: Uint8Array) => number | null): Promise<RecoveryResult> {
    const result: RecoveryResult = { records: 0, damagedRecords: 0, damagedBytes: 0 };
    const names = (await fs.readdir(this.dir)).filter((n) => SEGMENT_NAME.test(n)).sort();
    for (const name of names) {
      this.nextSegment = Number(SEGMENT_NAME.exec(name)![1]) + 1;
      const file = path.join(this.dir, name);
      const segment: Segment = { file, records: 0, bytes: 0, newestMs: 0 };
      let data: Buffer;
      try {
        data = await fs.readFile(file);
      } catch (err) {
        this.log.error({ err, file }, 'journal segment unreadable: skipped');
        result.damagedRecords++;
        continue;
      }
      let offset = 0;
      while (offset < data.length) {
        const remaining = data.length - offset;
        const length = remaining >= HEADER_BYTES ? data.readUInt32LE(offset) : -1;
        const intact =
          length >= 0 &&
          length <= MAX_RECORD_BYTES &&
          remaining >= HEADER_BYTES + length &&
          crc32(data.subarray(offset + HEADER_BYTES, offset + HEADER_BYTES + length)) === data.readUInt32LE(offset + 4);
        const timeMs = intact ? onRecord(data.subarray(offset + HEADER_BYTES, offset + HEADER_BYTES + length)) : null;
        if (timeMs === null) break;
        segment.records++;
        segment.bytes += HEADER_BYTES + length;
        segment.newestMs = Math.max(segment.newestMs, timeMs);
        offset += HEADER_BYTES + length;
      }
      result.records += segment.records;
      if (offset < data.length) {
        // Everything after the first bad record is unframed: cut it off so it is counted once.
        result.damagedRecords++;
        result.damagedBytes += data.length - offset;
        this.log.warn({ file, offset, bytes: data.length - offset }, 'journal: damaged tail dropped');
        await fs.truncate(file, offset);
      }
      this.segments.push(segment);
    }
    return result;
  }

  /** Resolves when these entries, and everything appended before them, are on disk. */
  append(entries: JournalEntry[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error('journal closed'));
    return new Promise((resolve, reject) => {
      this.pending.push({ entries, resolve, reject });
      void this.drain();
    });
  }

  private async drain(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0);
      try {
        await this.write(batch.flatMap((p) => p.entries));
        for (const p of batch) p.resolve();
      } catch (err) {
        this.log.error({ err }, 'journal write failed');
        for (const p of batch) p.reject(err as Error);
      }
    }
    this.writing = false;
  }

  private async write(entries: JournalEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const segment = this.segments.at(-1)!;
    const buffers = entries.map((e) => encodeRecord(e.payload));
    const expected = buffers.reduce((n, b) => n + b.length, 0);
    const { bytesWritten } = await this.current!.writev(buffers);
    if (bytesWritten !== expected) throw new Error(`journal: short write (${bytesWritten} of ${expected} bytes)`);
    await this.current!.datasync();
    segment.records += entries.length;
    segment.bytes += expected;
    for (const e of entries) segment.newestMs = Math.max(segment.newestMs, e.timeMs);
    if (segment.records >= this.segmentSize.records || segment.bytes >= this.segmentSize.bytes) {
      await this.rotate();
      await this.enforceRetention();
    }
  }

  private async rotate(): Promise<void> {
    await this.current?.close();
    const file = path.join(this.dir, segmentName(this.nextSegment++));
    this.current = await fs.open(file, 'a');
    this.segments.push({ file, records: 0, bytes: 0, newestMs: 0 });
  }

  /**
   * Deletes whole old segments once newer ones hold the retained count or bytes, or they are all
   * too old. The last segment is the one being written and stays.
   */
  private async enforceRetention(): Promise<void> {
    const oldestKept = Date.now() - this.retention.maxAgeMs;
    let records = this.segments.reduce((n, s) => n + s.records, 0);
    let bytes = this.segments.reduce((n, s) => n + s.bytes, 0);
    while (this.segments.length > 1) {
      const oldest = this.segments[0]!;
      const enoughWithout = records - oldest.records >= this.retention.maxRecords || bytes - oldest.bytes >= this.retention.maxBytes;
      if (!enoughWithout && oldest.newestMs >= oldestKept) break;
      await fs.rm(oldest.file, { force: true });
      this.segments.shift();
      records -= oldest.records;
      bytes -= oldest.bytes;
    }
  }

  /** Waits for queued appends, then closes the segment. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.append([]).catch(() => undefined);
    this.closed = true;
    await this.current?.close();
    this.current = null;
  }
}
