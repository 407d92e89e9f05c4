import koffi from 'koffi';

/**
 * The system libbpf (libbpf1) and the few libc calls the ring reader needs, through koffi.
 * koffi 3 hands pointers over as bigint addresses and NULL as null.
 */
const libbpf = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');

export type Pointer = bigint;

const print = koffi.proto('int libbpf_print_fn(int level, const char *fmt, void *args)');

/** struct bpf_object_open_opts of libbpf 1.1 (the `:32` hole is where attach_prog_fd was). */
export const ObjectOpenOpts = koffi.struct('bpf_object_open_opts', {
  sz: 'size_t',
  object_name: 'const char *',
  relaxed_maps: 'bool',
  pin_root_path: 'const char *',
  hole: 'uint32_t',
  kconfig: 'const char *',
  btf_custom_path: 'const char *',
  kernel_log_buf: 'char *',
  kernel_log_size: 'size_t',
  kernel_log_level: 'uint32_t',
});

export const bpf = {
  objectOpenFile: libbpf.func('void *bpf_object__open_file(const char *path, const bpf_object_open_opts *opts)'),
  objectLoad: libbpf.func('int bpf_object__load(void *obj)'),
  objectClose: libbpf.func('void bpf_object__close(void *obj)'),
  findProgram: libbpf.func('void *bpf_object__find_program_by_name(void *obj, const char *name)'),
  findMap: libbpf.func('void *bpf_object__find_map_by_name(void *obj, const char *name)'),
  programSetAutoload: libbpf.func('int bpf_program__set_autoload(void *prog, bool autoload)'),
  programSetAttachTarget: libbpf.func(
    'int bpf_program__set_attach_target(void *prog, int attach_prog_fd, const char *attach_func_name)',
  ),
  programFd: libbpf.func('int bpf_program__fd(void *prog)'),
  programAttach: libbpf.func('void *bpf_program__attach(void *prog)'),
  programAttachKprobe: libbpf.func(
    'void *bpf_program__attach_kprobe(void *prog, bool retprobe, const char *func_name)',
  ),
  linkDestroy: libbpf.func('int bpf_link__destroy(void *link)'),
  mapFd: libbpf.func('int bpf_map__fd(void *map)'),
  mapSetMaxEntries: libbpf.func('int bpf_map__set_max_entries(void *map, uint32_t max_entries)'),
  mapLookup: libbpf.func('int bpf_map_lookup_elem(int fd, const void *key, _Out_ void *value)'),
  mapUpdate: libbpf.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  mapDelete: libbpf.func('int bpf_map_delete_elem(int fd, const void *key)'),
  mapNextKey: libbpf.func('int bpf_map_get_next_key(int fd, const void *key, _Out_ void *next_key)'),
  numPossibleCpus: libbpf.func('int libbpf_num_possible_cpus(void)'),
  btfParse: libbpf.func('void *btf__parse(const char *path, void *ext)'),
  btfFindByNameKind: libbpf.func('int btf__find_by_name_kind(const void *btf, const char *name, uint32_t kind)'),
  btfFree: libbpf.func('void btf__free(void *btf)'),
  setPrint: libbpf.func('void *libbpf_set_print(libbpf_print_fn *fn)'),
};

export const c = {
  mmap: libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, intptr_t offset)'),
  munmap: libc.func('int munmap(void *addr, size_t length)'),
  vsnprintf: libc.func('int vsnprintf(_Out_ uint8_t *buf, size_t size, const char *fmt, void *args)'),
  sysconf: libc.func('long sysconf(int name)'),
};

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
const SC_PAGESIZE = 30;

export const pageSize = (): number => Number(c.sysconf(SC_PAGESIZE));

/** errno of the last failed call on this thread. */
export const errno = (): number => koffi.errno();

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 3: 'ESRCH', 7: 'E2BIG', 13: 'EACCES', 16: 'EBUSY', 22: 'EINVAL', 95: 'EOPNOTSUPP',
  99: 'EADDRNOTAVAIL', 524: 'ENOTSUPP',
};

/** `EPERM (1)` for an errno, positive or negative. */
export const errnoName = (n: number): string => `${ERRNO_NAMES[Math.abs(n)] ?? 'errno'} (${Math.abs(n)})`;

/** True for NULL and for libbpf's ERR_PTR-encoded errors (pointers within 4095 of the top). */
export function isNullOrErr(ptr: Pointer | null): ptr is null {
  if (ptr === null) return true;
  const addr = BigInt.asUintN(64, ptr);
  return addr === 0n || addr >= 0xfffffffffffff001n;
}

/** Exposes `length` bytes at `ptr` as an ArrayBuffer (no copy). */
export const view = (ptr: Pointer, length: number): ArrayBuffer => koffi.view(ptr, length);

const LIBBPF_LEVELS = ['warn', 'info', 'debug'] as const;
export type LibbpfLevel = (typeof LIBBPF_LEVELS)[number];

type LibbpfSink = (level: LibbpfLevel, message: string) => void;
let libbpfSink: LibbpfSink = () => {};
let printCallback: bigint | null = null;

/** Routes libbpf's messages (verifier logs, attach failures) to `sink`, formatted in C. */
export function setLibbpfPrint(sink: LibbpfSink): void {
  libbpfSink = sink;
  if (printCallback) return;
  const buf = new Uint8Array(4096);
  printCallback = koffi.register(
    (level: number, fmt: string, args: Pointer) => {
      const n = c.vsnprintf(buf, buf.length, fmt, args);
      const text = Buffer.from(buf.subarray(0, Math.max(0, Math.min(n, buf.length - 1)))).toString('utf8');
      libbpfSink(LIBBPF_LEVELS[level] ?? 'debug', text.trimEnd());
      return 0;
    },
    koffi.pointer(print),
  );
  bpf.setPrint(printCallback);
}
