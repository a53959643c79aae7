// tenantwal: snapshot encoding and decoding (layout: docs/FORMAT.md).
//
// A snapshot is [288-byte header][one zstd frame of pages 1..db_pages, in
// order, without page numbers][8-byte CRC-64 trailer]. Snapshots can be as
// large as the database, so both directions stream through local files: the
// writer compresses pages as they arrive and writes the header last; the
// reader makes one pass to prove the trailer CRC, then decompresses page by
// page with bounded memory and proves the DbChecksum at the end.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "store/format.h"
#include "store/format_internal.h"

namespace tw {

using namespace fmt_internal;

namespace {

constexpr char kSnapshotMagic[8] = {'T', 'W', 'S', 'N', 'A', 'P', 0, 0};

// Header field offsets (docs/FORMAT.md, "Snapshot header").
enum : size_t {
  kOffMagic = 0,
  kOffVersion = 8,
  kOffPageSize = 12,
  kOffTxid = 16,
  kOffDbPages = 24,
  kOffReserved1 = 28,
  kOffCommit = 32,
  kOffCreated = 40,
  kOffChecksum = 48,
  kOffWal = 56,  // salt1, salt2, frame, cksum1, cksum2: 5 x u32
  kOffReserved2 = 76,
  kOffBodySize = 80,
  kOffTenant = 88,
  kOffDb = 153,
  kOffGeneration = 218,
  kOffParent = 234,
  kOffReserved3 = 250,
  kOffHeaderCrc = 280,
};
static_assert(kOffHeaderCrc + 8 == kSnapshotHeaderSize);

void EncodeHeader(const SnapshotHeader& h, uint8_t* p) {
  std::memset(p, 0, kSnapshotHeaderSize);
  std::memcpy(p + kOffMagic, kSnapshotMagic, 8);
  PutU32(p + kOffVersion, h.version);
  PutU32(p + kOffPageSize, h.page_size);
  PutU64(p + kOffTxid, h.txid);
  PutU32(p + kOffDbPages, h.db_pages);
  PutU64(p + kOffCommit, static_cast<uint64_t>(h.commit_us));
  PutU64(p + kOffCreated, static_cast<uint64_t>(h.created_us));
  PutU64(p + kOffChecksum, h.checksum);
  PutU32(p + kOffWal + 0, h.wal.salt1);
  PutU32(p + kOffWal + 4, h.wal.salt2);
  PutU32(p + kOffWal + 8, h.wal.frame);
  PutU32(p + kOffWal + 12, h.wal.cksum1);
  PutU32(p + kOffWal + 16, h.wal.cksum2);
  PutU64(p + kOffBodySize, static_cast<uint64_t>(h.db_pages) * h.page_size);
  PutName(p + kOffTenant, h.tenant);
  PutName(p + kOffDb, h.db);
  PutGeneration(p + kOffGeneration, h.generation);
  PutGeneration(p + kOffParent, h.parent_generation);
  PutU64(p + kOffHeaderCrc, Crc64(p, kOffHeaderCrc));
}

Status DecodeHeader(const uint8_t* p, SnapshotHeader* out) {
  if (std::memcmp(p + kOffMagic, kSnapshotMagic, 8) != 0)
    return Status::Corruption("not a snapshot (bad magic)");
  if (GetU32(p + kOffVersion) != kFormatVersion)
    return Status::Corruption("unsupported snapshot version " +
                              std::to_string(GetU32(p + kOffVersion)));
  if (GetU64(p + kOffHeaderCrc) != Crc64(p, kOffHeaderCrc))
    return Status::Corruption("snapshot header CRC mismatch");
  if (!AllZero(p + kOffReserved1, 4) || !AllZero(p + kOffReserved2, 4) ||
      !AllZero(p + kOffReserved3, kOffHeaderCrc - kOffReserved3))
    return Status::Corruption("snapshot header: reserved bytes are not zero");
  SnapshotHeader h;
  h.version = kFormatVersion;
  h.page_size = GetU32(p + kOffPageSize);
  h.txid = GetU64(p + kOffTxid);
  h.db_pages = GetU32(p + kOffDbPages);
  h.commit_us = static_cast<int64_t>(GetU64(p + kOffCommit));
  h.created_us = static_cast<int64_t>(GetU64(p + kOffCreated));
  h.checksum = GetU64(p + kOffChecksum);
  h.wal.salt1 = GetU32(p + kOffWal + 0);
  h.wal.salt2 = GetU32(p + kOffWal + 4);
  h.wal.frame = GetU32(p + kOffWal + 8);
  h.wal.cksum1 = GetU32(p + kOffWal + 12);
  h.wal.cksum2 = GetU32(p + kOffWal + 16);
  if (!GetName(p + kOffTenant, &h.tenant) || !ValidName(h.tenant))
    return Status::Corruption("snapshot header: invalid tenant name");
  if (!GetName(p + kOffDb, &h.db) || !ValidName(h.db))
    return Status::Corruption("snapshot header: invalid database name");
  if (!GetGeneration(p + kOffGeneration, false, &h.generation))
    return Status::Corruption("snapshot header: invalid generation id");
  if (!GetGeneration(p + kOffParent, true, &h.parent_generation))
    return Status::Corruption("snapshot header: invalid parent generation id");
  if (!ValidPageSize(h.page_size))
    return Status::Corruption("snapshot header: invalid page size " + std::to_string(h.page_size));
  if (GetU64(p + kOffBodySize) != static_cast<uint64_t>(h.db_pages) * h.page_size)
    return Status::Corruption("snapshot header: body size does not match the page count");
  *out = std::move(h);
  return Status::OK();
}

}  // namespace

Status ParseSnapshotHeader(std::string_view bytes, SnapshotHeader* out) {
  if (bytes.size() < kSnapshotHeaderSize) return Status::Corruption("snapshot header truncated");
  return DecodeHeader(reinterpret_cast<const uint8_t*>(bytes.data()), out);
}

// ---- writer ------------------------------------------------------------------------

struct SnapshotWriter::Impl {
  ZstdFileSink sink;
  SnapshotHeader hdr;
  Status error;
  bool open = false;
  uint64_t pages = 0;
  uint64_t checksum = 0;

  Status Fail(Status s) {
    if (error.ok()) error = s;
    return s;
  }
};

SnapshotWriter::SnapshotWriter() : impl_(new Impl) {}

SnapshotWriter::~SnapshotWriter() {
  if (impl_->open) Abandon();
}

Status SnapshotWriter::Open(const std::string& path, const SnapshotHeader& hdr, int level) {
  if (impl_->open) return Status::InvalidArgument("snapshot writer already open");
  if (!ValidName(hdr.tenant) || !ValidName(hdr.db))
    return Status::InvalidArgument("snapshot: invalid tenant or database name");
  if (!IsGenerationId(hdr.generation) ||
      !(hdr.parent_generation.empty() || IsGenerationId(hdr.parent_generation)))
    return Status::InvalidArgument("snapshot: invalid generation id");
  if (!ValidPageSize(hdr.page_size)) return Status::InvalidArgument("snapshot: invalid page size");
  impl_.reset(new Impl);
  impl_->hdr = hdr;
  impl_->hdr.version = kFormatVersion;
  impl_->open = true;
  Status s = impl_->sink.Open(path, kSnapshotHeaderSize, level);
  if (!s.ok()) {
    Abandon();
    return s;
  }
  return Status::OK();
}

Status SnapshotWriter::AddPage(const uint8_t* data) {
  Impl& w = *impl_;
  if (!w.error.ok()) return w.error;
  if (!w.open) return Status::InvalidArgument("snapshot writer is not open");
  if (w.pages >= UINT32_MAX - 1) return w.Fail(Status::InvalidArgument("snapshot: too many pages"));
  Status s = w.sink.Write(data, w.hdr.page_size);
  if (!s.ok()) return w.Fail(s);
  w.pages++;
  w.checksum ^= PageChecksum(static_cast<uint32_t>(w.pages), data, w.hdr.page_size);
  return Status::OK();
}

Status SnapshotWriter::Finish(bool sync, uint64_t* bytes) {
  Impl& w = *impl_;
  if (!w.error.ok()) return w.error;
  if (!w.open) return Status::InvalidArgument("snapshot writer is not open");
  w.hdr.db_pages = static_cast<uint32_t>(w.pages);
  w.hdr.checksum = w.checksum;
  uint8_t header[kSnapshotHeaderSize];
  EncodeHeader(w.hdr, header);
  Status s = w.sink.EndFrame();
  if (s.ok()) s = FinishObjectFile(w.sink.fd(), w.sink.path(), header, sizeof(header), sync, bytes);
  if (s.ok()) s = w.sink.Close();
  if (!s.ok()) return w.Fail(s);
  w.open = false;
  return Status::OK();
}

void SnapshotWriter::Abandon() {
  impl_->sink.Abandon();
  impl_->open = false;
  if (impl_->error.ok()) impl_->error = Status::Aborted("snapshot writer abandoned");
}

// ---- reader ------------------------------------------------------------------------

struct SnapshotReader::Impl {
  int fd = -1;
  uint64_t size = 0;
  SnapshotHeader hdr;
  ~Impl() {
    if (fd >= 0) ::close(fd);
  }
};

SnapshotReader::SnapshotReader() : impl_(new Impl) {}
SnapshotReader::~SnapshotReader() = default;

Status SnapshotReader::Open(const std::string& path) {
  impl_.reset(new Impl);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("snapshot " + path);
    return Status::IOError("open " + path + ": " + std::strerror(errno));
  }
  impl_->fd = fd;
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::IOError("stat " + path + ": " + std::strerror(errno));
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kSnapshotHeaderSize + kTrailerSize)
    return Status::Corruption("snapshot truncated (" + std::to_string(size) + " bytes)");
  uint8_t trailer[kTrailerSize];
  TW_RETURN_IF_ERROR(PreadFull(fd, trailer, sizeof(trailer), size - kTrailerSize));
  uint64_t crc = 0;
  TW_RETURN_IF_ERROR(Crc64OfFileRange(fd, size - kTrailerSize, &crc));
  if (crc != GetU64(trailer)) return Status::Corruption("snapshot CRC-64 mismatch");
  uint8_t header[kSnapshotHeaderSize];
  TW_RETURN_IF_ERROR(PreadFull(fd, header, sizeof(header), 0));
  TW_RETURN_IF_ERROR(DecodeHeader(header, &impl_->hdr));
  impl_->size = size;
  return Status::OK();
}

const SnapshotHeader& SnapshotReader::header() const { return impl_->hdr; }

Status SnapshotReader::ForEach(
    const std::function<bool(uint32_t pgno, const uint8_t* page)>& on_page) {
  if (impl_->fd < 0 || impl_->size == 0)
    return Status::InvalidArgument("snapshot reader is not open");
  const SnapshotHeader& h = impl_->hdr;
  ZstdSource src;
  TW_RETURN_IF_ERROR(src.InitFile(impl_->fd, kSnapshotHeaderSize,
                                  impl_->size - kSnapshotHeaderSize - kTrailerSize));
  std::vector<uint8_t> page(h.page_size);
  uint64_t sum = 0;
  for (uint32_t pgno = 1; pgno <= h.db_pages; pgno++) {
    TW_RETURN_IF_ERROR(src.Read(page.data(), page.size()));
    sum ^= PageChecksum(pgno, page.data(), page.size());
    if (on_page && !on_page(pgno, page.data())) return Status::OK();
  }
  TW_RETURN_IF_ERROR(src.ExpectEnd());
  if (sum != h.checksum) return Status::Corruption("snapshot: database checksum mismatch");
  return Status::OK();
}

}  // namespace tw
