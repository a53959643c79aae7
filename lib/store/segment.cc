// tenantwal: segment encoding and decoding (layout: docs/FORMAT.md).
//
// A segment is [288-byte header][one zstd frame][8-byte CRC-64 trailer]. The
// writer streams transaction records and pages through zstd into a local
// spool file and writes the header last, once the txid range, times and
// checksums are known; the trailer is computed over the file as stored. The
// reader proves the trailer and the header CRC before decoding anything,
// then decodes the body with bounded memory, checking every record against
// the header: txids consecutive from min_txid, page numbers strictly
// increasing and within the database, counts and sizes exact.
#include <cstring>

#include "store/format.h"
#include "store/format_internal.h"

namespace tw {

using namespace fmt_internal;

namespace {

constexpr char kSegmentMagic[8] = {'T', 'W', 'S', 'E', 'G', 0, 0, 0};

// Header field offsets (docs/FORMAT.md, "Segment header").
enum : size_t {
  kOffMagic = 0,
  kOffVersion = 8,
  kOffPageSize = 12,
  kOffMinTxid = 16,
  kOffMaxTxid = 24,
  kOffTxnCount = 32,
  kOffDbPagesAfter = 36,
  kOffFirstCommit = 40,
  kOffLastCommit = 48,
  kOffChecksumBefore = 56,
  kOffChecksumAfter = 64,
  kOffWal = 72,  // salt1, salt2, frame, cksum1, cksum2: 5 x u32
  kOffLevel = 92,  // u32: bits 0-7 level, bit 8 points, others zero
  kOffPageTotal = 96,
  kOffBodySize = 104,
  kOffTenant = 112,
  kOffDb = 177,
  kOffGeneration = 242,
  kOffReserved2 = 258,
  kOffHeaderCrc = 280,
};
static_assert(kOffHeaderCrc + 8 == kSegmentHeaderSize);

// Uncompressed body size for the given counts; false on overflow.
bool BodySize(uint64_t txn_count, uint64_t page_total, uint32_t page_size, uint64_t* out) {
  uint64_t a, b;
  if (__builtin_mul_overflow(txn_count, static_cast<uint64_t>(kTxnRecordSize), &a)) return false;
  if (__builtin_mul_overflow(page_total, static_cast<uint64_t>(page_size) + 4, &b)) return false;
  return !__builtin_add_overflow(a, b, out);
}

void EncodeHeader(const SegmentHeader& h, uint64_t page_total, uint64_t body_size, uint8_t* p) {
  std::memset(p, 0, kSegmentHeaderSize);
  std::memcpy(p + kOffMagic, kSegmentMagic, 8);
  PutU32(p + kOffVersion, h.version);
  PutU32(p + kOffPageSize, h.page_size);
  PutU64(p + kOffMinTxid, h.min_txid);
  PutU64(p + kOffMaxTxid, h.max_txid);
  PutU32(p + kOffTxnCount, h.txn_count);
  PutU32(p + kOffDbPagesAfter, h.db_pages_after);
  PutU64(p + kOffFirstCommit, static_cast<uint64_t>(h.first_commit_us));
  PutU64(p + kOffLastCommit, static_cast<uint64_t>(h.last_commit_us));
  PutU64(p + kOffChecksumBefore, h.checksum_before);
  PutU64(p + kOffChecksumAfter, h.checksum_after);
  PutU32(p + kOffWal + 0, h.wal_after.salt1);
  PutU32(p + kOffWal + 4, h.wal_after.salt2);
  PutU32(p + kOffWal + 8, h.wal_after.frame);
  PutU32(p + kOffWal + 12, h.wal_after.cksum1);
  PutU32(p + kOffWal + 16, h.wal_after.cksum2);
  PutU32(p + kOffLevel, (h.level & 0xff) | (h.points ? 0x100u : 0u));
  PutU64(p + kOffPageTotal, page_total);
  PutU64(p + kOffBodySize, body_size);
  PutName(p + kOffTenant, h.tenant);
  PutName(p + kOffDb, h.db);
  PutGeneration(p + kOffGeneration, h.generation);
  PutU64(p + kOffHeaderCrc, Crc64(p, kOffHeaderCrc));
}

// Decodes and validates a header; *page_total/*body_size from the header.
Status DecodeHeader(const uint8_t* p, SegmentHeader* out, uint64_t* page_total,
                    uint64_t* body_size) {
  if (std::memcmp(p + kOffMagic, kSegmentMagic, 8) != 0)
    return Status::Corruption("not a segment (bad magic)");
  if (GetU32(p + kOffVersion) != kFormatVersion)
    return Status::Corruption("unsupported segment version " +
                              std::to_string(GetU32(p + kOffVersion)));
  if (GetU64(p + kOffHeaderCrc) != Crc64(p, kOffHeaderCrc))
    return Status::Corruption("segment header CRC mismatch");
  if (!AllZero(p + kOffReserved2, kOffHeaderCrc - kOffReserved2))
    return Status::Corruption("segment header: reserved bytes are not zero");
  const uint32_t lv = GetU32(p + kOffLevel);
  if ((lv & ~0x1ffu) != 0 || (lv & 0xff) > 15)
    return Status::Corruption("segment header: invalid level field");
  SegmentHeader h;
  h.level = lv & 0xff;
  h.points = (lv & 0x100) != 0;
  h.version = kFormatVersion;
  h.page_size = GetU32(p + kOffPageSize);
  h.min_txid = GetU64(p + kOffMinTxid);
  h.max_txid = GetU64(p + kOffMaxTxid);
  h.txn_count = GetU32(p + kOffTxnCount);
  h.db_pages_after = GetU32(p + kOffDbPagesAfter);
  h.first_commit_us = static_cast<int64_t>(GetU64(p + kOffFirstCommit));
  h.last_commit_us = static_cast<int64_t>(GetU64(p + kOffLastCommit));
  h.checksum_before = GetU64(p + kOffChecksumBefore);
  h.checksum_after = GetU64(p + kOffChecksumAfter);
  h.wal_after.salt1 = GetU32(p + kOffWal + 0);
  h.wal_after.salt2 = GetU32(p + kOffWal + 4);
  h.wal_after.frame = GetU32(p + kOffWal + 8);
  h.wal_after.cksum1 = GetU32(p + kOffWal + 12);
  h.wal_after.cksum2 = GetU32(p + kOffWal + 16);
  uint64_t total = GetU64(p + kOffPageTotal);
  uint64_t body = GetU64(p + kOffBodySize);
  if (!GetName(p + kOffTenant, &h.tenant) || !ValidName(h.tenant))
    return Status::Corruption("segment header: invalid tenant name");
  if (!GetName(p + kOffDb, &h.db) || !ValidName(h.db))
    return Status::Corruption("segment header: invalid database name");
  if (!GetGeneration(p + kOffGeneration, false, &h.generation))
    return Status::Corruption("segment header: invalid generation id");
  if (!ValidPageSize(h.page_size))
    return Status::Corruption("segment header: invalid page size " + std::to_string(h.page_size));
  if (h.min_txid == 0 || h.max_txid < h.min_txid)
    return Status::Corruption("segment header: invalid txid range");
  if (h.points ? (h.txn_count == 0 || h.txn_count > h.max_txid - h.min_txid + 1)
               : h.max_txid - h.min_txid + 1 != h.txn_count)
    return Status::Corruption("segment header: txn_count does not match the txid range");
  if (h.db_pages_after == 0) return Status::Corruption("segment header: database has no pages");
  uint64_t expect = 0;
  if (!BodySize(h.txn_count, total, h.page_size, &expect) || expect != body)
    return Status::Corruption("segment header: body size does not match the counts");
  *out = std::move(h);
  *page_total = total;
  *body_size = body;
  return Status::OK();
}

}  // namespace

Status ParseSegmentHeader(std::string_view bytes, SegmentHeader* out) {
  if (bytes.size() < kSegmentHeaderSize) return Status::Corruption("segment header truncated");
  uint64_t total, body;
  return DecodeHeader(reinterpret_cast<const uint8_t*>(bytes.data()), out, &total, &body);
}

// ---- writer ------------------------------------------------------------------------

struct SegmentWriter::Impl {
  ZstdFileSink sink;
  SegmentHeader hdr;
  Status error;  // sticky: the first failure
  bool open = false;
  bool in_txn = false;
  TxnInfo cur;
  uint32_t pages_in_txn = 0;
  uint32_t last_pgno = 0;
  uint64_t txns = 0;
  uint64_t page_total = 0;
  uint64_t raw = 0;

  Status Fail(Status s) {
    if (error.ok()) error = s;
    return s;
  }
};

SegmentWriter::SegmentWriter() : impl_(new Impl) {}

SegmentWriter::~SegmentWriter() {
  if (impl_->open) Abandon();
}

Status SegmentWriter::Open(const std::string& path, const SegmentHeader& hdr, int level) {
  if (impl_->open) return Status::InvalidArgument("segment writer already open");
  if (!ValidName(hdr.tenant) || !ValidName(hdr.db))
    return Status::InvalidArgument("segment: invalid tenant or database name");
  if (!IsGenerationId(hdr.generation))
    return Status::InvalidArgument("segment: invalid generation id");
  if (!ValidPageSize(hdr.page_size)) return Status::InvalidArgument("segment: invalid page size");
  if (hdr.min_txid == 0) return Status::InvalidArgument("segment: min_txid must be >= 1");
  impl_.reset(new Impl);
  impl_->hdr = hdr;
  impl_->hdr.version = kFormatVersion;
  impl_->open = true;
  Status s = impl_->sink.Open(path, kSegmentHeaderSize, level);
  if (!s.ok()) {
    Abandon();
    return s;
  }
  return Status::OK();
}

Status SegmentWriter::BeginTxn(const TxnInfo& txn) {
  Impl& w = *impl_;
  if (!w.error.ok()) return w.error;
  if (!w.open) return Status::InvalidArgument("segment writer is not open");
  if (w.in_txn && w.pages_in_txn != w.cur.page_count)
    return w.Fail(Status::InvalidArgument("segment: previous transaction is missing pages"));
  const bool ordered = w.hdr.points
                           ? (w.txns == 0 ? txn.txid >= w.hdr.min_txid : txn.txid > w.cur.txid)
                           : txn.txid == w.hdr.min_txid + w.txns;
  if (!ordered)
    return w.Fail(Status::InvalidArgument("segment: txid " + std::to_string(txn.txid) +
                                          (w.hdr.points ? " is not increasing" : " is not consecutive")));
  if (w.txns >= UINT32_MAX) return w.Fail(Status::InvalidArgument("segment: too many txns"));
  if (txn.db_pages_after == 0 || txn.page_count > txn.db_pages_after)
    return w.Fail(Status::InvalidArgument("segment: bad page counts in transaction"));
  uint8_t rec[kTxnRecordSize];
  PutU64(rec + 0, txn.txid);
  PutU64(rec + 8, static_cast<uint64_t>(txn.commit_us));
  PutU32(rec + 16, txn.db_pages_after);
  PutU32(rec + 20, txn.page_count);
  PutU64(rec + 24, txn.checksum_after);
  Status s = w.sink.Write(rec, sizeof(rec));
  if (!s.ok()) return w.Fail(s);
  if (w.txns == 0) w.hdr.first_commit_us = txn.commit_us;
  w.cur = txn;
  w.in_txn = true;
  w.pages_in_txn = 0;
  w.last_pgno = 0;
  w.txns++;
  return Status::OK();
}

Status SegmentWriter::AddPage(uint32_t pgno, const uint8_t* data) {
  Impl& w = *impl_;
  if (!w.error.ok()) return w.error;
  if (!w.open || !w.in_txn) return Status::InvalidArgument("segment: AddPage outside a txn");
  if (w.pages_in_txn >= w.cur.page_count)
    return w.Fail(Status::InvalidArgument("segment: more pages than page_count"));
  if (pgno <= w.last_pgno || pgno > w.cur.db_pages_after)
    return w.Fail(Status::InvalidArgument("segment: page " + std::to_string(pgno) +
                                          " out of order or beyond the database"));
  uint8_t be[4];
  PutU32(be, pgno);
  Status s = w.sink.Write(be, 4);
  if (s.ok()) s = w.sink.Write(data, w.hdr.page_size);
  if (!s.ok()) return w.Fail(s);
  w.pages_in_txn++;
  w.last_pgno = pgno;
  w.page_total++;
  w.raw += w.hdr.page_size;
  return Status::OK();
}

Status SegmentWriter::Finish(const WalPosition& wal_after, bool sync, uint64_t* bytes) {
  Impl& w = *impl_;
  if (!w.error.ok()) return w.error;
  if (!w.open) return Status::InvalidArgument("segment writer is not open");
  if (w.txns == 0) return w.Fail(Status::InvalidArgument("segment: no transactions"));
  if (w.pages_in_txn != w.cur.page_count)
    return w.Fail(Status::InvalidArgument("segment: last transaction is missing pages"));
  SegmentHeader& h = w.hdr;
  h.max_txid = h.points ? w.cur.txid : h.min_txid + w.txns - 1;
  h.txn_count = static_cast<uint32_t>(w.txns);
  h.db_pages_after = w.cur.db_pages_after;
  h.last_commit_us = w.cur.commit_us;
  h.checksum_after = w.cur.checksum_after;
  h.wal_after = wal_after;
  uint64_t body = 0;
  if (!BodySize(w.txns, w.page_total, h.page_size, &body))
    return w.Fail(Status::InvalidArgument("segment: too large"));
  uint8_t header[kSegmentHeaderSize];
  EncodeHeader(h, w.page_total, body, header);
  Status s = w.sink.EndFrame();
  if (s.ok()) s = FinishObjectFile(w.sink.fd(), w.sink.path(), header, sizeof(header), sync, bytes);
  if (s.ok()) s = w.sink.Close();
  if (!s.ok()) return w.Fail(s);
  w.open = false;
  return Status::OK();
}

void SegmentWriter::Abandon() {
  impl_->sink.Abandon();
  impl_->open = false;
  if (impl_->error.ok()) impl_->error = Status::Aborted("segment writer abandoned");
}

uint64_t SegmentWriter::raw_bytes() const { return impl_->raw; }

// ---- reader ------------------------------------------------------------------------

struct SegmentReader::Impl {
  bool open = false;
  SegmentHeader hdr;
  uint64_t page_total = 0;
  uint64_t body_size = 0;
  std::string_view body;  // compressed frame, borrowed from the caller
};

SegmentReader::SegmentReader() : impl_(new Impl) {}
SegmentReader::~SegmentReader() = default;

Status SegmentReader::Open(std::string_view bytes) {
  *impl_ = Impl();
  if (bytes.size() < kSegmentHeaderSize + kTrailerSize)
    return Status::Corruption("segment truncated (" + std::to_string(bytes.size()) + " bytes)");
  const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t n = bytes.size() - kTrailerSize;
  if (GetU64(p + n) != Crc64(p, n)) return Status::Corruption("segment CRC-64 mismatch");
  TW_RETURN_IF_ERROR(DecodeHeader(p, &impl_->hdr, &impl_->page_total, &impl_->body_size));
  impl_->body = bytes.substr(kSegmentHeaderSize, n - kSegmentHeaderSize);
  impl_->open = true;
  return Status::OK();
}

const SegmentHeader& SegmentReader::header() const { return impl_->hdr; }

Status SegmentReader::ForEach(
    const std::function<bool(const TxnInfo&)>& on_txn,
    const std::function<bool(uint32_t pgno, const uint8_t* page)>& on_page) {
  if (!impl_->open) return Status::InvalidArgument("segment reader is not open");
  const SegmentHeader& h = impl_->hdr;
  ZstdSource src;
  TW_RETURN_IF_ERROR(src.InitMemory(impl_->body));
  std::vector<uint8_t> page(h.page_size);
  uint64_t pages_seen = 0;
  uint64_t prev_txid = h.min_txid - 1;
  for (uint64_t i = 0; i < h.txn_count; i++) {
    uint8_t rec[kTxnRecordSize];
    TW_RETURN_IF_ERROR(src.Read(rec, sizeof(rec)));
    TxnInfo t;
    t.txid = GetU64(rec + 0);
    t.commit_us = static_cast<int64_t>(GetU64(rec + 8));
    t.db_pages_after = GetU32(rec + 16);
    t.page_count = GetU32(rec + 20);
    t.checksum_after = GetU64(rec + 24);
    std::string at = "segment txn " + std::to_string(t.txid) + ": ";
    if (h.points) {
      if (t.txid <= prev_txid || t.txid > h.max_txid ||
          (i + 1 == h.txn_count && t.txid != h.max_txid))
        return Status::Corruption("segment: restore point txid " + std::to_string(t.txid) +
                                  " out of order or outside the header's range");
    } else if (t.txid != h.min_txid + i) {
      return Status::Corruption("segment: txid " + std::to_string(t.txid) + " where " +
                                std::to_string(h.min_txid + i) + " was expected");
    }
    prev_txid = t.txid;
    if (t.db_pages_after == 0 || t.page_count > t.db_pages_after)
      return Status::Corruption(at + "page count exceeds the database size");
    if (t.page_count > impl_->page_total - pages_seen)
      return Status::Corruption(at + "more pages than the header's total");
    if (i == 0 && t.commit_us != h.first_commit_us)
      return Status::Corruption(at + "commit time differs from the header");
    if (i + 1 == h.txn_count &&
        (t.commit_us != h.last_commit_us || t.db_pages_after != h.db_pages_after ||
         t.checksum_after != h.checksum_after))
      return Status::Corruption(at + "last transaction differs from the header");
    if (on_txn && !on_txn(t)) return Status::OK();
    uint32_t last = 0;
    for (uint32_t j = 0; j < t.page_count; j++) {
      uint8_t be[4];
      TW_RETURN_IF_ERROR(src.Read(be, 4));
      uint32_t pgno = GetU32(be);
      if (pgno <= last || pgno > t.db_pages_after)
        return Status::Corruption(at + "page " + std::to_string(pgno) +
                                  " out of order or beyond the database");
      last = pgno;
      TW_RETURN_IF_ERROR(src.Read(page.data(), page.size()));
      if (on_page && !on_page(pgno, page.data())) return Status::OK();
    }
    pages_seen += t.page_count;
  }
  if (pages_seen != impl_->page_total)
    return Status::Corruption("segment: fewer pages than the header's total");
  return src.ExpectEnd();
}

}  // namespace tw
