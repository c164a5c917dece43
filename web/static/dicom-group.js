// DICOM instances picked or dropped together become one upload per series: the upload page
// reads the start of every file, keeps the DICOM ones (the "DICM" magic at byte 128, whatever
// the name: scanners often write instances without an extension), groups them by Series
// Instance UID and packs each group into a zip, which the server registers as one slide.
//
// - Reading: only the first HEAD_BYTES of a file. The file meta group (always explicit VR
//   little endian) gives the SOP class and the transfer syntax; the data set is walked (explicit
//   or implicit VR little endian, sequences of undefined length included) up to the Series
//   Instance UID (0020,000E), which comes long before the pixel data.
// - Grouping: a file whose series cannot be read there (a big-endian or deflated data set, a
//   header longer than HEAD_BYTES, a DICOMDIR) joins the only series of the drop when there is
//   exactly one, which is what a folder of one slide gives; with several series such files
//   form one more group of their own and the server decides what they are.
// - Checking: a VL Whole Slide Microscopy instance whose transfer syntax the server cannot
//   decode refuses its whole series before a byte is sent (`unreadableSyntaxes`). Other SOP
//   classes are left to the server, which ignores what is not part of a slide.
// - Packing: a zip built as a Blob from parts (headers and the File objects themselves, so
//   nothing is copied into memory), STORE method (the frames are compressed already), UTF-8
//   names, the CRC-32 of each instance in a data descriptor after its bytes and in the central
//   directory, and ZIP64 records where a size, an offset or the entry count outgrows the
//   classic fields. Everything but the CRCs is laid out in advance (`planZip`), so the zip's
//   size is known before any byte is read, and `writeZip` reads every byte once, handing each
//   piece of the zip in order to a sink (the SHA-256 the upload announces) while it computes
//   the CRCs with the hasher it is given (hash-wasm's CRC-32 on the upload page).
//
// No DOM here: the upload page's strings and rows are in upload.js.

/** How much of each file is read to recognise and group it. */
export const HEAD_BYTES = 64 * 1024;
/** The SOP class of a VL Whole Slide Microscopy Image. */
export const WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6";

/** The transfer syntaxes the server decodes (slide/src/dicom/series.rs). */
const READABLE_SYNTAXES = new Set([
  "1.2.840.10008.1.2.4.50", // JPEG Baseline (Process 1)
  "1.2.840.10008.1.2.4.90", // JPEG 2000 Image Compression (Lossless Only)
  "1.2.840.10008.1.2.4.91", // JPEG 2000 Image Compression
  "1.2.840.10008.1.2.1", // Explicit VR Little Endian
]);

/** Names of the transfer syntaxes a slide is likely to come in, as the server names them. */
const SYNTAX_NAMES = new Map([
  ["1.2.840.10008.1.2", "Implicit VR Little Endian"],
  ["1.2.840.10008.1.2.1", "Explicit VR Little Endian"],
  ["1.2.840.10008.1.2.1.98", "Encapsulated Uncompressed Explicit VR Little Endian"],
  ["1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian"],
  ["1.2.840.10008.1.2.2", "Explicit VR Big Endian"],
  ["1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"],
  ["1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)"],
  ["1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)"],
  ["1.2.840.10008.1.2.4.70", "JPEG Lossless, Non-Hierarchical, First-Order Prediction"],
  ["1.2.840.10008.1.2.4.80", "JPEG-LS Lossless Image Compression"],
  ["1.2.840.10008.1.2.4.81", "JPEG-LS Lossy (Near-Lossless) Image Compression"],
  ["1.2.840.10008.1.2.4.90", "JPEG 2000 Image Compression (Lossless Only)"],
  ["1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression"],
  ["1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)"],
  ["1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component Image Compression"],
  ["1.2.840.10008.1.2.4.110", "JPEG XL Lossless"],
  ["1.2.840.10008.1.2.4.111", "JPEG XL Recompression"],
  ["1.2.840.10008.1.2.4.112", "JPEG XL"],
  ["1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 Image Compression (Lossless Only)"],
  ["1.2.840.10008.1.2.4.202", "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)"],
  ["1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000 Image Compression"],
  ["1.2.840.10008.1.2.5", "RLE Lossless"],
  ["1.2.840.10008.1.2.8.1", "Deflated Image Frame Compression"],
]);

/** The name of a transfer syntax, or null for one not in the list. */
export function syntaxName(uid) {
  return SYNTAX_NAMES.get(uid) ?? null;
}

// ---- Reading the header ------------------------------------------------------------------------

const IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2";
const EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2";
const DEFLATED = new Set(["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"]);
const UNDEFINED_LENGTH = 0xffffffff;
/** Explicit VRs with a reserved field and a 4-byte length. */
const LONG_VRS = new Set(["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"]);
const SERIES_INSTANCE_UID = 0x0020000e;
const ITEM_GROUP = 0xfffe;
const ITEM = 0xe000;
const ITEM_END = 0xe00d;
const SEQUENCE_END = 0xe0dd;

/** An element's header at `pos`, or null where the bytes end first. */
function elementAt(view, pos, implicit) {
  if (pos + 8 > view.byteLength) return null;
  const group = view.getUint16(pos, true);
  const element = view.getUint16(pos + 2, true);
  const tag = ((group << 16) | element) >>> 0;
  // Items and delimiters carry no VR in either encoding.
  if (implicit || group === ITEM_GROUP) {
    return { tag, group, element, vr: null, length: view.getUint32(pos + 4, true), value: pos + 8 };
  }
  const vr = String.fromCharCode(view.getUint8(pos + 4), view.getUint8(pos + 5));
  if (LONG_VRS.has(vr)) {
    if (pos + 12 > view.byteLength) return null;
    return { tag, group, element, vr, length: view.getUint32(pos + 8, true), value: pos + 12 };
  }
  return { tag, group, element, vr, length: view.getUint16(pos + 6, true), value: pos + 8 };
}

/** Where the element after `header` starts; -1 where the bytes end first or do not parse. */
function skipValue(view, header, implicit) {
  if (header.length !== UNDEFINED_LENGTH) return header.value + header.length;
  // Undefined length: a sequence (UN ones hold implicit VR) or encapsulated pixel data, both
  // items up to a sequence delimiter.
  return skipItems(view, header.value, implicit || header.vr === "UN");
}

function skipItems(view, pos, implicit) {
  for (;;) {
    const item = elementAt(view, pos, true);
    if (!item || item.group !== ITEM_GROUP) return -1;
    if (item.element === SEQUENCE_END) return item.value;
    if (item.element !== ITEM) return -1;
    if (item.length !== UNDEFINED_LENGTH) {
      pos = item.value + item.length;
      continue;
    }
    pos = item.value;
    for (;;) {
      const inner = elementAt(view, pos, implicit);
      if (!inner) return -1;
      if (inner.group === ITEM_GROUP && inner.element === ITEM_END) {
        pos = inner.value;
        break;
      }
      pos = skipValue(view, inner, implicit);
      if (pos < 0) return -1;
    }
  }
}

/** A UI or CS value: ASCII, padded with NUL or space to an even length. */
function text(bytes, from, length) {
  let value = "";
  for (let i = from; i < from + length && i < bytes.length; i += 1) value += String.fromCharCode(bytes[i]);
  return value.replace(/[\0 ]+$/, "").trim();
}

/**
 * What the start of a file says: null unless it is DICOM (the magic at byte 128); else its
 * Media Storage SOP Class UID (0002,0002), Transfer Syntax UID (0002,0010) and Series Instance
 * UID (0020,000E), each null where these bytes do not tell.
 */
export function readDicomHead(bytes) {
  if (bytes.length < 132 || text(bytes, 128, 4) !== "DICM") return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const head = { sopClass: null, syntax: null, series: null };
  let pos = 132;
  for (;;) {
    const header = elementAt(view, pos, false);
    if (!header || header.group !== 0x0002) break;
    if (header.length === UNDEFINED_LENGTH) return head;
    if (header.element === 0x0002) head.sopClass = text(bytes, header.value, header.length);
    if (header.element === 0x0010) head.syntax = text(bytes, header.value, header.length);
    pos = header.value + header.length;
  }
  if (head.syntax === null || head.syntax === EXPLICIT_VR_BIG_ENDIAN || DEFLATED.has(head.syntax)) return head;
  const implicit = head.syntax === IMPLICIT_VR_LITTLE_ENDIAN;
  for (;;) {
    const header = elementAt(view, pos, implicit);
    // Tags ascend: past (0020,000E) it is not there.
    if (!header || header.tag > SERIES_INSTANCE_UID) return head;
    if (header.tag === SERIES_INSTANCE_UID) {
      if (header.value + header.length <= bytes.length) head.series = text(bytes, header.value, header.length) || null;
      return head;
    }
    pos = skipValue(view, header, implicit);
    if (pos < 0) return head;
  }
}

/** `readDicomHead` of a File's first HEAD_BYTES, or null when it is not DICOM or unreadable. */
export async function sniffDicom(file) {
  try {
    const buffer = await file.slice(0, HEAD_BYTES).arrayBuffer();
    return readDicomHead(new Uint8Array(buffer));
  } catch {
    // The upload of an unreadable file reports the error itself.
    return null;
  }
}

// ---- Grouping ----------------------------------------------------------------------------------

/**
 * Splits `files` into the files that are not DICOM and one group per DICOM series:
 * `{ others: File[], groups: [{ series, instances: [{ file, sopClass, syntax, series }] }] }`,
 * each group's instances sorted by name (the zip's order, so the same files make the same zip).
 */
export async function groupDicom(files) {
  const others = [];
  const bySeries = new Map();
  const unplaced = [];
  // A few reads at a time: quick, without opening every file of a large drop at once.
  const heads = [];
  for (let start = 0; start < files.length; start += 8) {
    heads.push(...(await Promise.all(files.slice(start, start + 8).map(sniffDicom))));
  }
  files.forEach((file, index) => {
    const head = heads[index];
    if (!head) {
      others.push(file);
      return;
    }
    const instance = { file, ...head };
    if (!head.series) unplaced.push(instance);
    else if (bySeries.has(head.series)) bySeries.get(head.series).push(instance);
    else bySeries.set(head.series, [instance]);
  });
  const groups = [...bySeries].map(([series, instances]) => ({ series, instances }));
  if (unplaced.length && groups.length === 1) groups[0].instances.push(...unplaced);
  else if (unplaced.length) groups.push({ series: null, instances: unplaced });
  const byName = (a, b) => (a.file.name < b.file.name ? -1 : a.file.name > b.file.name ? 1 : 0);
  for (const group of groups) group.instances.sort(byName);
  return { others, groups };
}

/**
 * The transfer syntaxes of a group's whole-slide instances that the server cannot decode:
 * `[{ uid, name, count, file }]` (name null when unknown, `file` the first file using it).
 */
export function unreadableSyntaxes(group) {
  const found = new Map();
  for (const instance of group.instances) {
    if (instance.sopClass !== WSI_SOP_CLASS) continue;
    const uid = instance.syntax || "";
    if (READABLE_SYNTAXES.has(uid)) continue;
    const entry = found.get(uid);
    if (entry) entry.count += 1;
    else found.set(uid, { uid, name: syntaxName(uid), count: 1, file: instance.file.name });
  }
  return [...found.values()];
}

/** The zip's name: the first instance's, without a DICOM extension. */
export function zipName(group) {
  const first = group.instances[0].file.name;
  return `${first.replace(/\.(dcm|dicom)$/i, "") || "dicom"}.zip`;
}

// ---- The zip -----------------------------------------------------------------------------------

const MAX16 = 0xffff;
const MAX32 = 0xffffffff;
// Bit 3: CRC in a data descriptor after the data; bit 11: names in UTF-8.
const FLAGS = 0x0808;
const VERSION_CLASSIC = 20;
const VERSION_ZIP64 = 45;

/** Little-endian writer into a fixed-size buffer. */
class Bytes {
  constructor(length) {
    this.bytes = new Uint8Array(length);
    this.view = new DataView(this.bytes.buffer);
    this.pos = 0;
  }

  u16(value) {
    this.view.setUint16(this.pos, value, true);
    this.pos += 2;
    return this;
  }

  u32(value) {
    this.view.setUint32(this.pos, value >>> 0, true);
    this.pos += 4;
    return this;
  }

  u64(value) {
    this.view.setBigUint64(this.pos, BigInt(value), true);
    this.pos += 8;
    return this;
  }

  raw(bytes) {
    this.bytes.set(bytes, this.pos);
    this.pos += bytes.length;
    return this;
  }
}

/** MS-DOS date and time of `ms` in UTC (the same files give the same zip in every time zone). */
function dosTime(ms) {
  const date = new Date(Number.isFinite(ms) ? ms : 0);
  if (date.getUTCFullYear() < 1980) return { date: (1 << 5) | 1, time: 0 };
  if (date.getUTCFullYear() > 2107) return { date: (127 << 9) | (12 << 5) | 31, time: (23 << 11) | (59 << 5) | 29 };
  return {
    date: ((date.getUTCFullYear() - 1980) << 9) | ((date.getUTCMonth() + 1) << 5) | date.getUTCDate(),
    time: (date.getUTCHours() << 11) | (date.getUTCMinutes() << 5) | (date.getUTCSeconds() >> 1),
  };
}

/** Entry names: the file names, made unique, without path separators. */
function entryNames(files) {
  const seen = new Set();
  return files.map((file) => {
    const base = file.name.replace(/[/\\]/g, "_") || "instance";
    let name = base;
    for (let n = 2; seen.has(name); n += 1) name = `${base}~${n}`;
    seen.add(name);
    return name;
  });
}

/**
 * Lays out a zip of `files` (STORE, in this order) named `name`: every header but the CRCs,
 * every offset, and the total size. `forceZip64` writes the ZIP64 records even where the classic
 * fields would do (for tests: real series rarely reach 4 GiB in a test).
 */
export function planZip(files, name, { forceZip64 = false } = {}) {
  const encoder = new TextEncoder();
  const names = entryNames(files);
  let offset = 0;
  let lastModified = 0;
  const entries = files.map((file, index) => {
    const nameBytes = encoder.encode(names[index]);
    const size = file.size;
    const bigSize = forceZip64 || size >= MAX32;
    const farOffset = forceZip64 || offset >= MAX32;
    const { date, time } = dosTime(file.lastModified);
    lastModified = Math.max(lastModified, file.lastModified || 0);
    const localLength = 30 + nameBytes.length + (bigSize ? 20 : 0);
    const local = new Bytes(localLength)
      .u32(0x04034b50)
      .u16(bigSize ? VERSION_ZIP64 : VERSION_CLASSIC)
      .u16(FLAGS)
      .u16(0) // stored
      .u16(time)
      .u16(date)
      .u32(0) // the CRC follows the data
      .u32(bigSize ? MAX32 : size)
      .u32(bigSize ? MAX32 : size)
      .u16(nameBytes.length)
      .u16(bigSize ? 20 : 0)
      .raw(nameBytes);
    if (bigSize) local.u16(0x0001).u16(16).u64(size).u64(size);
    const entry = {
      file,
      nameBytes,
      size,
      offset,
      bigSize,
      farOffset,
      date,
      time,
      localHeader: local.bytes,
      descriptorLength: bigSize ? 24 : 16,
      crc: null,
    };
    offset += localLength + size + entry.descriptorLength;
    return entry;
  });
  const centralOffset = offset;
  let centralSize = 0;
  for (const entry of entries) centralSize += 46 + entry.nameBytes.length + zip64ExtraLength(entry);
  const zip64End = forceZip64 || entries.length >= MAX16 || centralOffset >= MAX32 || centralSize >= MAX32;
  const size = centralOffset + centralSize + (zip64End ? 56 + 20 : 0) + 22;
  return { name, entries, centralOffset, centralSize, zip64End, size, lastModified };
}

function zip64ExtraLength(entry) {
  const fields = (entry.bigSize ? 2 : 0) + (entry.farOffset ? 1 : 0);
  return fields ? 4 + 8 * fields : 0;
}

function dataDescriptor(entry) {
  const out = new Bytes(entry.descriptorLength).u32(0x08074b50).u32(entry.crc);
  return entry.bigSize ? out.u64(entry.size).u64(entry.size).bytes : out.u32(entry.size).u32(entry.size).bytes;
}

function centralDirectory(plan) {
  const { entries, centralOffset, centralSize } = plan;
  const out = new Bytes(plan.size - centralOffset);
  for (const entry of entries) {
    const extra = zip64ExtraLength(entry);
    out
      .u32(0x02014b50)
      .u16(VERSION_ZIP64) // made by: version 4.5, MS-DOS attributes
      .u16(extra ? VERSION_ZIP64 : VERSION_CLASSIC)
      .u16(FLAGS)
      .u16(0)
      .u16(entry.time)
      .u16(entry.date)
      .u32(entry.crc)
      .u32(entry.bigSize ? MAX32 : entry.size)
      .u32(entry.bigSize ? MAX32 : entry.size)
      .u16(entry.nameBytes.length)
      .u16(extra)
      .u16(0) // comment
      .u16(0) // disk
      .u16(0) // internal attributes
      .u32(0) // external attributes
      .u32(entry.farOffset ? MAX32 : entry.offset)
      .raw(entry.nameBytes);
    if (extra) {
      out.u16(0x0001).u16(extra - 4);
      if (entry.bigSize) out.u64(entry.size).u64(entry.size);
      if (entry.farOffset) out.u64(entry.offset);
    }
  }
  if (plan.zip64End) {
    const recordOffset = centralOffset + centralSize;
    out
      .u32(0x06064b50)
      .u64(44) // the record's size after this field
      .u16(VERSION_ZIP64)
      .u16(VERSION_ZIP64)
      .u32(0)
      .u32(0)
      .u64(entries.length)
      .u64(entries.length)
      .u64(centralSize)
      .u64(centralOffset)
      .u32(0x07064b50) // locator
      .u32(0)
      .u64(recordOffset)
      .u32(1);
  }
  const classic = !plan.zip64End;
  out
    .u32(0x06054b50)
    .u16(0)
    .u16(0)
    .u16(classic ? entries.length : MAX16)
    .u16(classic ? entries.length : MAX16)
    .u32(classic ? centralSize : MAX32)
    .u32(classic ? centralOffset : MAX32)
    .u16(0);
  return out.bytes;
}

/**
 * Reads every instance of `plan` once, `sliceSize` bytes at a time, and returns the zip as a
 * File (made of the instances' File objects and the headers, not a copy). Every piece of the
 * zip goes to `sink(bytes)` in order as it becomes known; `progress(done)` is called with the
 * bytes of the zip passed so far before each read (it may throw to stop). `createCrc32()`
 * resolves to a CRC-32 hasher with hash-wasm's interface (`init`, `update`, `digest("hex")`).
 */
export async function writeZip(plan, { createCrc32, sink = () => {}, progress = () => {}, sliceSize = 16 * 1024 * 1024 }) {
  const parts = [];
  let done = 0;
  const emit = (bytes) => {
    sink(bytes);
    done += bytes.length;
  };
  for (const entry of plan.entries) {
    emit(entry.localHeader);
    parts.push(entry.localHeader, entry.file);
    const crc = await createCrc32();
    crc.init();
    let read = 0;
    while (read < entry.size) {
      progress(done);
      const end = Math.min(read + sliceSize, entry.size);
      const bytes = new Uint8Array(await entry.file.slice(read, end).arrayBuffer());
      // A file changed on disk since it was chosen would make a zip that lies.
      if (bytes.length !== end - read) throw new Error(`${entry.file.name} changed while it was read`);
      crc.update(bytes);
      emit(bytes);
      read = end;
    }
    entry.crc = Number.parseInt(crc.digest("hex"), 16);
    const descriptor = dataDescriptor(entry);
    emit(descriptor);
    parts.push(descriptor);
  }
  const tail = centralDirectory(plan);
  emit(tail);
  parts.push(tail);
  progress(done);
  if (done !== plan.size) throw new Error(`the zip came to ${done} bytes, not the ${plan.size} planned`);
  return new File(parts, plan.name, { type: "application/zip", lastModified: plan.lastModified });
}
