// tenantwal: Status, the error type used across every internal layer.
//
// Modelled on LevelDB's Status: a cheap value that is either OK or carries a
// code and a human-readable message. Functions return Status instead of
// throwing, so nothing ever unwinds across the C boundary of the SQLite
// extension, and callers decide per code what to do:
//   kNotFound        the object/row/file does not exist (often not an error)
//   kCorruption      bytes failed a checksum or a structural check
//   kInvalidArgument bad name, path, flag, config or API body
//   kIOError         local filesystem error (errno text in the message)
//   kUnavailable     transient remote failure (5xx, 429, network): retry
//   kPermission      4xx auth/permission failure from a remote: do not retry
//   kBusy            a lock could not be taken in time: retry later
//   kNoSpace         ring/spool/disk is full
//   kAborted         the operation was cancelled (shutdown)
//   kConflict        a conditional write was refused: the object is not in the
//                    state the writer expected (S3 412 Precondition Failed, or
//                    409 ConditionalRequestConflict): read it again, never retry blindly
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace tw {

class Status {
 public:
  enum Code {
    kOk = 0,
    kNotFound,
    kCorruption,
    kInvalidArgument,
    kIOError,
    kUnavailable,
    kPermission,
    kBusy,
    kNoSpace,
    kAborted,
    kConflict,
  };

  Status() = default;
  static Status OK() { return Status(); }
  static Status NotFound(std::string_view m) { return Status(kNotFound, m); }
  static Status Corruption(std::string_view m) { return Status(kCorruption, m); }
  static Status InvalidArgument(std::string_view m) { return Status(kInvalidArgument, m); }
  static Status IOError(std::string_view m) { return Status(kIOError, m); }
  static Status Unavailable(std::string_view m) { return Status(kUnavailable, m); }
  static Status Permission(std::string_view m) { return Status(kPermission, m); }
  static Status Busy(std::string_view m) { return Status(kBusy, m); }
  static Status NoSpace(std::string_view m) { return Status(kNoSpace, m); }
  static Status Aborted(std::string_view m) { return Status(kAborted, m); }
  static Status Conflict(std::string_view m) { return Status(kConflict, m); }

  bool ok() const { return code_ == kOk; }
  Code code() const { return code_; }
  bool IsNotFound() const { return code_ == kNotFound; }
  bool IsCorruption() const { return code_ == kCorruption; }
  bool IsConflict() const { return code_ == kConflict; }
  bool IsRetryable() const { return code_ == kUnavailable || code_ == kBusy; }
  const std::string& message() const { return msg_; }

  // "Corruption: segment wal/x.twseg: bad checksum"; "OK" when ok().
  std::string ToString() const {
    if (ok()) return "OK";
    return std::string(CodeName(code_)) + ": " + msg_;
  }

  // Returns a copy whose message is "prefix: message" (for adding context).
  Status Prefix(std::string_view prefix) const {
    if (ok()) return *this;
    return Status(code_, std::string(prefix) + ": " + msg_);
  }

  static const char* CodeName(Code c) {
    switch (c) {
      case kOk: return "OK";
      case kNotFound: return "NotFound";
      case kCorruption: return "Corruption";
      case kInvalidArgument: return "InvalidArgument";
      case kIOError: return "IOError";
      case kUnavailable: return "Unavailable";
      case kPermission: return "Permission";
      case kBusy: return "Busy";
      case kNoSpace: return "NoSpace";
      case kAborted: return "Aborted";
      case kConflict: return "Conflict";
    }
    return "Unknown";
  }

 private:
  Status(Code c, std::string_view m) : code_(c), msg_(m) {}
  Code code_ = kOk;
  std::string msg_;
};

}  // namespace tw

// Returns early from the enclosing function when `expr` is not OK.
#define TW_RETURN_IF_ERROR(expr)          \
  do {                                    \
    ::tw::Status _tw_s = (expr);          \
    if (!_tw_s.ok()) return _tw_s;        \
  } while (0)
