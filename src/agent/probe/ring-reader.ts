import koffi, { type node as koffiNode } from 'koffi';
import { RecordMemory } from './decoder.js';
import { c, errno, MAP_SHARED, pageSize, PROT_READ, PROT_WRITE, type Pointer, view } from './libbpf.js';

const BUSY_BIT = 0x80000000;
const DISCARD_BIT = 0x40000000;
const HEADER = 8;
/**
 * The kernel commits a record by clearing its header's busy bit after writing the data, so the
 * header must be read with acquire order (libbpf: smp_load_acquire). x86-64 keeps loads in order
 * and V8 keeps typed-array loads in program order, so a plain load is one there; V8 does not inline
 * Atomics.load, whose builtin call costs about as much per record as the C reader's whole work.
 */
const ORDERED_LOADS = process.arch === 'x64';

/** Receives each record: its bytes are `memory.u8[off, off + len)`; valid only during the call. */
export type RecordHandler = (memory: RecordMemory, off: number, len: number) => void;

/**
 * Reads a BPF ring buffer map directly from its mmap'd pages, on Node's event loop:
 * the map fd is polled through libuv (no thread, no CPU while idle); after a wake-up the reader
 * drains every `batchMs` for as long as each drain finds records, and listens again only once one
 * finds none, so a busy ring is drained in batches without a poll registration per batch (the BPF
 * side only wakes it for the first record after a drain or a large backlog).
 *
 * Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (ours, RW); page 1 producer_pos;
 * then the data pages, mapped twice back to back so a record never wraps.
 */
export class RingReader {
  private readonly page = pageSize();
  private readonly consumerPtr: Pointer;
  private readonly producerPtr: Pointer;
  private readonly consumerPos: BigUint64Array;
  private readonly producerPos: BigUint64Array;
  private readonly data: RecordMemory;
  private poller: koffiNode.PollHandle | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    fd: number,
    private readonly size: number,
    private readonly onRecord: RecordHandler,
    private readonly batchMs = 10,
  ) {
    const consumer = c.mmap(null, this.page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (consumer === null || BigInt.asIntN(64, consumer) === -1n) throw new Error(`mmap ring consumer page: errno ${errno()}`);
    const producer = c.mmap(null, this.page + 2 * size, PROT_READ, MAP_SHARED, fd, this.page);
    if (producer === null || BigInt.asIntN(64, producer) === -1n) {
      c.munmap(consumer, this.page);
      throw new Error(`mmap ring data pages: errno ${errno()}`);
    }
    this.consumerPtr = consumer;
    this.producerPtr = producer;
    const cons = view(consumer, this.page);
    const prod = view(producer, this.page + 2 * size);
    this.consumerPos = new BigUint64Array(cons, 0, 1);
    this.producerPos = new BigUint64Array(prod, 0, 1);
    this.data = new RecordMemory(prod, this.page);
    this.fd = fd;
  }

  private readonly fd: number;

  /** Starts listening; records are delivered from the event loop. */
  start(): void {
    this.poller = koffi.node.poll(this.fd, { readable: true, writable: false, disconnect: false }, () => this.onReadable());
  }

  private onReadable(): void {
    this.poller?.stop();
    this.drain();
    if (!this.closed) this.timer = setTimeout(() => this.afterBatch(), this.batchMs);
  }

  private afterBatch(): void {
    this.timer = null;
    if (this.closed) return;
    if (this.drain() > 0) this.timer = setTimeout(() => this.afterBatch(), this.batchMs);
    else this.poller?.start({ readable: true, writable: false, disconnect: false }, () => this.onReadable());
  }

  /** Consumes every committed record; returns how many were delivered. */
  drain(): number {
    let cons = Number(Atomics.load(this.consumerPos, 0));
    const prod = Number(Atomics.load(this.producerPos, 0));
    let delivered = 0;
    // The positions count bytes since the map was made and pass 2^31 within minutes at high rates,
    // where `%` is a float remainder: it is taken once, and the offset then only grows. A drain
    // reads at most the ring's size from below it, and the data pages are mapped twice, so the
    // offset stays inside the mapping (and below 2^31: the ring is at most 1 GiB).
    let off = cons % this.size;
    while (cons < prod) {
      const header = ORDERED_LOADS ? this.data.u32[off >> 2]! : Atomics.load(this.data.u32, off >> 2);
      if (header & BUSY_BIT) break; // reserved, not yet committed
      const len = header & ~(BUSY_BIT | DISCARD_BIT);
      if (!(header & DISCARD_BIT)) {
        this.onRecord(this.data, off + HEADER, len);
        delivered++;
      }
      const step = (len + HEADER + 7) & ~7;
      cons += step;
      off += step;
    }
    Atomics.store(this.consumerPos, 0, BigInt(cons));
    return delivered;
  }

  /** Stops listening and delivers what is still in the ring. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.poller?.close();
    this.poller = null;
    this.drain();
    c.munmap(this.consumerPtr, this.page);
    c.munmap(this.producerPtr, this.page + 2 * this.size);
  }
}
