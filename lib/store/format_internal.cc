// tenantwal: shared building blocks of the segment and snapshot codecs (see
// format_internal.h for the design).
#include "store/format_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "store/format.h"

namespace tw {
namespace fmt_internal {

namespace {

Status Errno(const std::string& what, const std::string& path) {
  return Status::IOError(what + " " + path + ": " + std::strerror(errno));
}

Status PwriteFull(int fd, const void* data, size_t n, uint64_t offset, const std::string& path) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return Errno("write", path);
    }
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return Status::OK();
}

std::string ZstdError(size_t code) { return ZSTD_getErrorName(code); }

}  // namespace

void PutName(uint8_t* p, std::string_view name) {
  size_t n = std::min(name.size(), kMaxNameLen);
  std::memset(p, 0, kNameFieldSize);
  p[0] = static_cast<uint8_t>(n);
  std::memcpy(p + 1, name.data(), n);
}

bool GetName(const uint8_t* p, std::string* out) {
  size_t n = p[0];
  if (n > kMaxNameLen) return false;
  if (!AllZero(p + 1 + n, kMaxNameLen - n)) return false;
  out->assign(reinterpret_cast<const char*>(p + 1), n);
  return true;
}

void PutGeneration(uint8_t* p, std::string_view gen) {
  std::memset(p, 0, 16);
  std::memcpy(p, gen.data(), std::min<size_t>(gen.size(), 16));
}

bool GetGeneration(const uint8_t* p, bool allow_empty, std::string* out) {
  if (AllZero(p, 16)) {
    out->clear();
    return allow_empty;
  }
  std::string g(reinterpret_cast<const char*>(p), 16);
  if (!IsGenerationId(g)) return false;
  *out = std::move(g);
  return true;
}

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0) return false;
  return true;
}

// ---- ZstdFileSink --------------------------------------------------------------

ZstdFileSink::~ZstdFileSink() {
  if (cctx_ != nullptr) ZSTD_freeCCtx(cctx_);
  if (fd_ >= 0) ::close(fd_);
}

Status ZstdFileSink::Open(const std::string& path, size_t header_size, int level) {
  path_ = path;
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) return Errno("create", path);
  std::vector<uint8_t> zeros(header_size, 0);
  TW_RETURN_IF_ERROR(PwriteFull(fd_, zeros.data(), zeros.size(), 0, path_));
  offset_ = header_size;
  cctx_ = ZSTD_createCCtx();
  if (cctx_ == nullptr) return Status::NoSpace("zstd: out of memory");
  level = std::clamp(level, 1, 19);
  size_t r = ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
  if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
  if (!ZSTD_isError(r))
    r = ZSTD_CCtx_setParameter(cctx_, ZSTD_c_windowLog, std::min(23, kMaxWindowLog));
  if (ZSTD_isError(r)) return Status::InvalidArgument("zstd: " + ZstdError(r));
  out_.resize(ZSTD_CStreamOutSize());
  return Status::OK();
}

Status ZstdFileSink::Drain(ZSTD_inBuffer* in, ZSTD_EndDirective mode) {
  for (;;) {
    ZSTD_outBuffer ob{out_.data(), out_.size(), 0};
    size_t r = ZSTD_compressStream2(cctx_, &ob, in, mode);
    if (ZSTD_isError(r)) return Status::IOError("zstd compress: " + ZstdError(r));
    if (ob.pos > 0) {
      TW_RETURN_IF_ERROR(PwriteFull(fd_, out_.data(), ob.pos, offset_, path_));
      offset_ += ob.pos;
    }
    if (mode == ZSTD_e_end ? r == 0 : in->pos == in->size) return Status::OK();
  }
}

Status ZstdFileSink::Write(const void* data, size_t n) {
  if (fd_ < 0 || cctx_ == nullptr) return Status::InvalidArgument("writer is not open");
  ZSTD_inBuffer in{data, n, 0};
  return Drain(&in, ZSTD_e_continue);
}

Status ZstdFileSink::EndFrame() {
  if (fd_ < 0 || cctx_ == nullptr) return Status::InvalidArgument("writer is not open");
  ZSTD_inBuffer in{nullptr, 0, 0};
  return Drain(&in, ZSTD_e_end);
}

Status ZstdFileSink::Close() {
  if (fd_ < 0) return Status::OK();
  int r = ::close(fd_);
  fd_ = -1;
  if (r != 0) return Errno("close", path_);
  return Status::OK();
}

void ZstdFileSink::Abandon() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!path_.empty()) ::unlink(path_.c_str());
  path_.clear();
}

Status FinishObjectFile(int fd, const std::string& path, const uint8_t* header,
                        size_t header_size, bool sync, uint64_t* bytes) {
  TW_RETURN_IF_ERROR(PwriteFull(fd, header, header_size, 0, path));
  struct stat st;
  if (::fstat(fd, &st) != 0) return Errno("stat", path);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t crc = 0;
  TW_RETURN_IF_ERROR(Crc64OfFileRange(fd, size, &crc));
  uint8_t trailer[kTrailerSize];
  PutU64(trailer, crc);
  TW_RETURN_IF_ERROR(PwriteFull(fd, trailer, sizeof(trailer), size, path));
  if (sync && ::fsync(fd) != 0) return Errno("fsync", path);
  if (bytes != nullptr) *bytes = size + kTrailerSize;
  return Status::OK();
}

Status PreadFull(int fd, void* dst, size_t n, uint64_t offset) {
  uint8_t* p = static_cast<uint8_t*>(dst);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(std::string("read: ") + std::strerror(errno));
    }
    if (r == 0) return Status::Corruption("file is shorter than expected");
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return Status::OK();
}

Status Crc64OfFileRange(int fd, uint64_t length, uint64_t* crc) {
  std::vector<uint8_t> buf(256 * 1024);
  uint64_t c = 0, pos = 0;
  while (pos < length) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), length - pos));
    TW_RETURN_IF_ERROR(PreadFull(fd, buf.data(), n, pos));
    c = Crc64(buf.data(), n, c);
    pos += n;
  }
  *crc = c;
  return Status::OK();
}

// ---- ZstdSource ------------------------------------------------------------------

ZstdSource::~ZstdSource() {
  if (dctx_ != nullptr) ZSTD_freeDCtx(dctx_);
}

static Status NewDCtx(ZSTD_DCtx** out) {
  *out = ZSTD_createDCtx();
  if (*out == nullptr) return Status::NoSpace("zstd: out of memory");
  size_t r = ZSTD_DCtx_setParameter(*out, ZSTD_d_windowLogMax, kMaxWindowLog);
  if (ZSTD_isError(r)) return Status::InvalidArgument("zstd: " + ZstdError(r));
  return Status::OK();
}

Status ZstdSource::InitMemory(std::string_view compressed) {
  TW_RETURN_IF_ERROR(NewDCtx(&dctx_));
  mem_ = reinterpret_cast<const uint8_t*>(compressed.data());
  in_ = ZSTD_inBuffer{mem_, compressed.size(), 0};
  input_exhausted_ = true;  // the whole input is already in in_
  out_.resize(ZSTD_DStreamOutSize());
  return Status::OK();
}

Status ZstdSource::InitFile(int fd, uint64_t offset, uint64_t length) {
  TW_RETURN_IF_ERROR(NewDCtx(&dctx_));
  fd_ = fd;
  file_pos_ = offset;
  file_end_ = offset + length;
  file_buf_.resize(128 * 1024);
  in_ = ZSTD_inBuffer{file_buf_.data(), 0, 0};
  input_exhausted_ = (length == 0);
  out_.resize(ZSTD_DStreamOutSize());
  return Status::OK();
}

Status ZstdSource::FillInput() {
  if (fd_ < 0 || file_pos_ >= file_end_) {
    input_exhausted_ = true;
    return Status::OK();
  }
  size_t n = static_cast<size_t>(std::min<uint64_t>(file_buf_.size(), file_end_ - file_pos_));
  TW_RETURN_IF_ERROR(PreadFull(fd_, file_buf_.data(), n, file_pos_));
  file_pos_ += n;
  in_ = ZSTD_inBuffer{file_buf_.data(), n, 0};
  if (file_pos_ >= file_end_) input_exhausted_ = true;
  return Status::OK();
}

// One decompression step: refills input if needed and produces output into
// out_ (possibly none, if only input was consumed).
Status ZstdSource::Decompress() {
  if (in_.pos == in_.size && !input_exhausted_) TW_RETURN_IF_ERROR(FillInput());
  ZSTD_outBuffer ob{out_.data(), out_.size(), 0};
  size_t in_before = in_.pos;
  size_t r = ZSTD_decompressStream(dctx_, &ob, &in_);
  if (ZSTD_isError(r)) return Status::Corruption("body: zstd: " + ZstdError(r));
  out_pos_ = 0;
  out_len_ = ob.pos;
  if (r == 0) frame_done_ = true;
  if (ob.pos == 0 && in_.pos == in_before && !frame_done_ && in_.pos == in_.size &&
      input_exhausted_)
    return Status::Corruption("body: compressed stream is truncated");
  return Status::OK();
}

Status ZstdSource::Read(void* dst, size_t n) {
  if (dctx_ == nullptr) return Status::InvalidArgument("source is not initialised");
  uint8_t* d = static_cast<uint8_t*>(dst);
  int idle = 0;
  while (n > 0) {
    if (out_pos_ < out_len_) {
      size_t k = std::min(n, out_len_ - out_pos_);
      std::memcpy(d, out_.data() + out_pos_, k);
      out_pos_ += k;
      d += k;
      n -= k;
      idle = 0;
      continue;
    }
    if (frame_done_) return Status::Corruption("body: ends before the header says it should");
    size_t in_before = in_.pos;
    TW_RETURN_IF_ERROR(Decompress());
    // Guard against a stream that neither consumes nor produces.
    if (out_len_ == 0 && in_.pos == in_before && !frame_done_ && ++idle > 8)
      return Status::Corruption("body: zstd made no progress");
  }
  return Status::OK();
}

Status ZstdSource::ExpectEnd() {
  if (dctx_ == nullptr) return Status::InvalidArgument("source is not initialised");
  int idle = 0;
  while (!frame_done_ || out_pos_ < out_len_) {
    if (out_pos_ < out_len_) return Status::Corruption("body: longer than the header says");
    size_t in_before = in_.pos;
    TW_RETURN_IF_ERROR(Decompress());
    if (out_len_ == 0 && in_.pos == in_before && !frame_done_ && ++idle > 8)
      return Status::Corruption("body: zstd made no progress");
  }
  if (in_.pos != in_.size || (fd_ >= 0 && file_pos_ < file_end_))
    return Status::Corruption("body: bytes follow the compressed frame");
  return Status::OK();
}

}  // namespace fmt_internal
}  // namespace tw
