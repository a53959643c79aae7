// tenantwal: S3Store (see s3_store.h for the design): request building and
// signing, the libcurl transfer with its callbacks, retry/backoff, error
// mapping, and ListObjectsV2 paging with pugixml.
//
// S3 operations used (S3 API Reference): PutObject, GetObject,
// ListObjectsV2 (list-type=2, prefix, delimiter, max-keys,
// continuation-token), DeleteObject.

#include "store/s3_store.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <strings.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pugixml.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <random>
#include <thread>

#include "store/sigv4.h"

namespace tw {

namespace {

constexpr size_t kMaxErrorBody = 64 * 1024;  // bytes of an error response kept for parsing
constexpr size_t kMaxIdleHandles = 32;
constexpr int kBackoffCapMs = 20000;

std::once_flag g_curl_init;

std::string ErrnoText(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

// Printable-ASCII copy of at most `max` bytes of untrusted text (server
// responses), so it is safe to put in a message.
std::string Sanitize(std::string_view s, size_t max = 300) {
  std::string out;
  for (char ch : s.substr(0, max)) {
    unsigned char c = static_cast<unsigned char>(ch);
    out.push_back(c >= 0x20 && c < 0x7f ? ch : '?');
  }
  if (s.size() > max) out += "...";
  return out;
}

bool ValidBucketName(const std::string& b) {
  if (b.size() < 3 || b.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  for (char c : b) {
    if (!alnum(c) && c != '.' && c != '-') return false;
  }
  if (!alnum(b.front()) || !alnum(b.back())) return false;
  if (b.find("..") != std::string::npos) return false;
  if (b.rfind("xn--", 0) == 0) return false;
  // Not formatted as an IPv4 address (four dot-separated digit groups).
  int dots = 0;
  bool digits_and_dots = true;
  for (char c : b) {
    if (c == '.') dots++;
    else if (c < '0' || c > '9') digits_and_dots = false;
  }
  return !(digits_and_dots && dots == 3);
}

// Full-jitter backoff before retry number `n` (0-based): uniform in
// [0, min(cap, base * 2^n)] milliseconds.
int BackoffMs(int base_ms, int n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  int64_t ceiling = std::max(1, base_ms);
  for (int i = 0; i < n && ceiling < kBackoffCapMs; i++) ceiling *= 2;
  ceiling = std::min<int64_t>(ceiling, kBackoffCapMs);
  return static_cast<int>(std::uniform_int_distribution<int64_t>(0, ceiling)(rng));
}

bool RetryableS3Code(const std::string& code) {
  return code == "SlowDown" || code == "RequestTimeout" || code == "InternalError" ||
         code == "ServiceUnavailable" || code == "Throttling" || code == "ThrottlingException";
}

// curl failures that no retry can fix: bad URL/configuration or a TLS
// certificate that does not verify.
bool PermanentCurlError(CURLcode rc) {
  switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_FUNCTION_NOT_FOUND:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_OUT_OF_MEMORY:
      return true;
    default:
      return false;
  }
}

// Reads `fd` once from offset 0, returning its size and hex SHA-256.
Status HashFile(int fd, const std::string& path, uint64_t* size, std::string* hex) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    return Status::IOError("cannot initialize SHA-256");
  }
  std::unique_ptr<char[]> buf(new char[1 << 20]);
  uint64_t total = 0;
  Status s;
  while (true) {
    ssize_t r = ::pread(fd, buf.get(), 1 << 20, static_cast<off_t>(total));
    if (r < 0) {
      if (errno == EINTR) continue;
      s = Status::IOError(ErrnoText("read " + path, errno));
      break;
    }
    if (r == 0) break;
    EVP_DigestUpdate(ctx, buf.get(), static_cast<size_t>(r));
    total += static_cast<uint64_t>(r);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  if (!s.ok()) return s;
  *size = total;
  *hex = sigv4::HexEncode(std::string_view(reinterpret_cast<const char*>(md), len));
  return Status::OK();
}

}  // namespace

// One logical S3 operation; Execute() runs it with retries. The per-attempt
// fields are reset by Attempt().
struct S3Store::Call {
  Op op = kGet;
  std::string method = "GET";
  std::string path;  // unencoded request path
  std::vector<sigv4::QueryParam> query;
  std::vector<std::pair<std::string, std::string>> extra_headers;
  std::string what;                 // "GET s3://bucket/key", for messages
  bool missing_key_ok = false;      // DELETE: 404 NoSuchKey is success

  // Request body: memory (`body_mem`) or a file read with pread (`body_fd`).
  std::string_view body_mem;
  int body_fd = -1;
  std::string body_path;  // for messages
  uint64_t body_size = 0;
  std::string payload_sha256 = sigv4::kEmptySha256;

  // 2xx response body sink: memory or a file written with pwrite.
  std::string* out_mem = nullptr;
  int out_fd = -1;
  std::string out_path;

  // Per-attempt state.
  CURL* curl = nullptr;
  uint64_t read_off = 0;
  uint64_t received = 0;
  bool status_known = false;
  long http_status = 0;  // of the last attempt (0: no response)
  bool to_sink = false;
  std::string err_body;
  int local_errno = 0;
  std::string local_what;

  std::string resp_etag;             // the response's ETag header, quotes stripped
  bool conditional = false;          // a PutIf: 412/409 mean Conflict
  static size_t Header(char* buf, size_t size, size_t nitems, void* user) noexcept;
  static size_t Write(char* ptr, size_t size, size_t nmemb, void* user) noexcept;
  static size_t Read(char* buf, size_t size, size_t nitems, void* user) noexcept;
  static int Seek(void* user, curl_off_t offset, int origin) noexcept;
};

// CURLOPT_HEADERFUNCTION: one header line per call ("Name: value\r\n").
// Keeps the ETag (RFC 9110 section 8.8.3: a quoted opaque string).
size_t S3Store::Call::Header(char* buf, size_t size, size_t nitems, void* user) noexcept {
  Call* c = static_cast<Call*>(user);
  const size_t n = size * nitems;
  std::string_view line(buf, n);
  if (line.size() > 5 && strncasecmp(line.data(), "etag:", 5) == 0) {
    std::string_view v = line.substr(5);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.remove_suffix(1);
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    c->resp_etag.assign(v.data(), v.size());
  }
  return n;
}

size_t S3Store::Call::Write(char* ptr, size_t size, size_t nmemb, void* user) noexcept {
  Call* c = static_cast<Call*>(user);
  size_t n = size * nmemb;
  if (!c->status_known) {
    long code = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &code);
    c->to_sink = code >= 200 && code < 300;
    c->status_known = true;
  }
  try {
    if (!c->to_sink) {
      if (c->err_body.size() < kMaxErrorBody) {
        c->err_body.append(ptr, std::min(n, kMaxErrorBody - c->err_body.size()));
      }
      return n;
    }
    if (c->out_mem != nullptr) {
      c->out_mem->append(ptr, n);
    } else if (c->out_fd >= 0) {
      size_t done = 0;
      while (done < n) {
        ssize_t w = ::pwrite(c->out_fd, ptr + done, n - done,
                             static_cast<off_t>(c->received + done));
        if (w < 0) {
          if (errno == EINTR) continue;
          c->local_errno = errno;
          c->local_what = "write " + c->out_path;
          return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
        }
        done += static_cast<size_t>(w);
      }
    }
    c->received += n;
    return n;
  } catch (...) {
    c->local_errno = ENOMEM;
    c->local_what = "buffer response";
    return 0;
  }
}

size_t S3Store::Call::Read(char* buf, size_t size, size_t nitems, void* user) noexcept {
  Call* c = static_cast<Call*>(user);
  uint64_t want = std::min<uint64_t>(size * nitems, c->body_size - c->read_off);
  if (want == 0) return 0;
  if (c->body_fd < 0) {
    std::memcpy(buf, c->body_mem.data() + c->read_off, want);
    c->read_off += want;
    return want;
  }
  while (true) {
    ssize_t r = ::pread(c->body_fd, buf, want, static_cast<off_t>(c->read_off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      c->local_errno = r < 0 ? errno : EIO;
      c->local_what = r < 0 ? "read " + c->body_path : c->body_path + " shrank during upload";
      return CURL_READFUNC_ABORT;
    }
    c->read_off += static_cast<uint64_t>(r);
    return static_cast<size_t>(r);
  }
}

int S3Store::Call::Seek(void* user, curl_off_t offset, int origin) noexcept {
  Call* c = static_cast<Call*>(user);
  if (origin != SEEK_SET || offset < 0 || static_cast<uint64_t>(offset) > c->body_size) {
    return CURL_SEEKFUNC_CANTSEEK;
  }
  c->read_off = static_cast<uint64_t>(offset);
  return CURL_SEEKFUNC_OK;
}

Status S3Store::Open(const std::string& bucket, const std::string& prefix,
                     const StoreOptions& options, std::unique_ptr<S3Store>* out) {
  out->reset();
  if (!ValidBucketName(bucket)) {
    return Status::InvalidArgument(
        "invalid S3 bucket name \"" + Sanitize(bucket, 80) +
        "\" (3-63 characters of a-z 0-9 . -, starting and ending with a letter or digit)");
  }
  if (!prefix.empty()) {
    Status s = ValidateObjectKey(prefix);
    if (!s.ok()) return s.Prefix("S3 key prefix");
  }
  if (options.access_key_id.empty() || options.secret_access_key.empty()) {
    return Status::InvalidArgument(
        "S3 credentials missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
  }
  StoreOptions opts = options;
  if (opts.region.empty()) opts.region = "us-east-1";
  if (opts.region.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") !=
      std::string::npos) {
    return Status::InvalidArgument("invalid AWS region \"" + Sanitize(opts.region, 40) + "\"");
  }
  std::unique_ptr<S3Store> s(new S3Store(bucket, prefix, opts));
  if (options.endpoint.empty()) {
    s->scheme_ = "https";
    if (bucket.find('.') != std::string::npos) {
      s->host_ = "s3." + opts.region + ".amazonaws.com";
      s->path_style_ = true;
    } else {
      s->host_ = bucket + ".s3." + opts.region + ".amazonaws.com";
      s->path_style_ = false;
    }
  } else {
    const std::string& e = options.endpoint;
    std::string bad = "invalid S3 endpoint \"" + Sanitize(e, 120) + "\"";
    size_t colon = e.find("://");
    if (colon == std::string::npos) return Status::InvalidArgument(bad + " (want http(s)://host[:port])");
    s->scheme_ = e.substr(0, colon);
    if (s->scheme_ != "http" && s->scheme_ != "https") {
      return Status::InvalidArgument(bad + " (scheme must be http or https)");
    }
    std::string rest = e.substr(colon + 3);
    size_t slash = rest.find('/');
    s->host_ = rest.substr(0, slash);
    std::string path = slash == std::string::npos ? "" : rest.substr(slash);
    while (!path.empty() && path.back() == '/') path.pop_back();
    s->base_path_ = path;
    if (s->host_.empty()) return Status::InvalidArgument(bad + " (no host)");
    for (char c : e) {
      unsigned char u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u >= 0x7f || c == '?' || c == '#') {
        return Status::InvalidArgument(bad + " (no spaces, query or fragment allowed)");
      }
    }
    if (s->host_.find('@') != std::string::npos) {
      return Status::InvalidArgument("invalid S3 endpoint: credentials in the URL are not allowed");
    }
    s->path_style_ = true;
  }
  std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  *out = std::move(s);
  return Status::OK();
}

S3Store::S3Store(std::string bucket, std::string prefix, StoreOptions options)
    : bucket_(std::move(bucket)), prefix_(std::move(prefix)), options_(std::move(options)) {}

S3Store::~S3Store() {
  for (void* h : pool_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void S3Store::set_list_page_size(int n) { list_page_size_ = std::clamp(n, 1, 1000); }

std::string S3Store::url() const {
  return prefix_.empty() ? "s3://" + bucket_ : "s3://" + bucket_ + "/" + prefix_;
}

std::string S3Store::FullKey(const std::string& key) const {
  return prefix_.empty() ? key : prefix_ + "/" + key;
}

std::string S3Store::ObjectPath(const std::string& full_key) const {
  return path_style_ ? base_path_ + "/" + bucket_ + "/" + full_key : "/" + full_key;
}

std::string S3Store::BucketPath() const {
  return path_style_ ? base_path_ + "/" + bucket_ : "/";
}

std::string S3Store::Describe(const std::string& full_key) const {
  return "s3://" + bucket_ + "/" + Sanitize(full_key, 400);
}

std::map<std::string, std::pair<uint64_t, uint64_t>> S3Store::RequestCounts() const {
  static const char* kNames[kNumOps] = {"PUT", "GET", "LIST", "DELETE"};
  std::map<std::string, std::pair<uint64_t, uint64_t>> m;
  for (int i = 0; i < kNumOps; i++) {
    m[kNames[i]] = {requests_[i].load(std::memory_order_relaxed),
                    failures_[i].load(std::memory_order_relaxed)};
  }
  return m;
}

void* S3Store::AcquireHandle() {
  {
    std::lock_guard<std::mutex> l(pool_mu_);
    if (!pool_.empty()) {
      void* h = pool_.back();
      pool_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void S3Store::ReleaseHandle(void* h) {
  {
    std::lock_guard<std::mutex> l(pool_mu_);
    if (pool_.size() < kMaxIdleHandles) {
      pool_.push_back(h);
      return;
    }
  }
  curl_easy_cleanup(static_cast<CURL*>(h));
}

Status S3Store::Execute(Call* call) {
  void* h = AcquireHandle();
  if (h == nullptr) return Status::Unavailable(call->what + ": curl_easy_init failed");
  Status last;
  const int attempts = 1 + std::max(0, options_.max_retries);
  for (int attempt = 0; attempt < attempts; attempt++) {
    if (attempt > 0) {
      std::this_thread::sleep_for(
          std::chrono::milliseconds(BackoffMs(options_.backoff_base_ms, attempt - 1)));
    }
    bool retryable = false;
    Status s;
    try {
      s = Attempt(h, call, &retryable);
    } catch (const std::exception& e) {
      s = Status::IOError(call->what + ": " + e.what());
    } catch (...) {
      s = Status::IOError(call->what + ": unexpected exception");
    }
    requests_[call->op].fetch_add(1, std::memory_order_relaxed);
    if (!s.ok()) failures_[call->op].fetch_add(1, std::memory_order_relaxed);
    if (s.ok() || !retryable) {
      ReleaseHandle(h);
      return s;
    }
    last = s;
    if (options_.on_retry && attempt + 1 < attempts) options_.on_retry(s, attempt + 1);
  }
  ReleaseHandle(h);
  return Status::Unavailable(call->what + ": gave up after " + std::to_string(attempts) +
                             " attempts; last error: " + last.message());
}

Status S3Store::Attempt(void* handle, Call* c, bool* retryable) {
  CURL* h = static_cast<CURL*>(handle);
  *retryable = false;
  curl_easy_reset(h);  // keeps the connection cache
  c->curl = h;
  c->read_off = 0;
  c->received = 0;
  c->status_known = false;
  c->to_sink = false;
  c->err_body.clear();
  c->local_errno = 0;
  c->local_what.clear();
  if (c->out_mem != nullptr) c->out_mem->clear();
  if (c->out_fd >= 0 && ::ftruncate(c->out_fd, 0) != 0) {
    return Status::IOError(ErrnoText("truncate " + c->out_path, errno));
  }

  // Sign exactly the headers that are sent.
  const std::string amz_date = sigv4::AmzDate(std::time(nullptr));
  sigv4::Request req;
  req.method = c->method;
  req.path = c->path;
  req.query = c->query;
  req.payload_sha256_hex = c->payload_sha256;
  req.headers = {{"host", host_},
                 {"x-amz-content-sha256", c->payload_sha256},
                 {"x-amz-date", amz_date}};
  if (!options_.session_token.empty()) {
    req.headers.emplace_back("x-amz-security-token", options_.session_token);
  }
  for (const auto& hv : c->extra_headers) req.headers.push_back(hv);
  sigv4::Signed sig = sigv4::Sign(req, options_.access_key_id, options_.secret_access_key,
                                  amz_date, options_.region, "s3");

  curl_slist* headers = nullptr;
  auto add = [&headers](const std::string& line) {
    curl_slist* n = curl_slist_append(headers, line.c_str());
    if (n != nullptr) headers = n;
  };
  add("Authorization: " + sig.authorization);
  for (const auto& [name, value] : req.headers) add(name + ": " + value);
  add("Expect:");  // no 100-continue round trip

  std::string url = scheme_ + "://" + host_ + sigv4::CanonicalUri(c->path);
  std::string query = sigv4::CanonicalQueryString(c->query);
  if (!query.empty()) url += "?" + query;

  char errbuf[CURL_ERROR_SIZE];
  errbuf[0] = '\0';
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "tenantwal/0.1");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout_ms));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.request_timeout_ms));
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, options_.verify_tls ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, options_.verify_tls ? 2L : 0L);
  if (!options_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str());
  c->resp_etag.clear();
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &Call::Header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Call::Write);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
  if (c->method == "PUT") {
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, &Call::Read);
    curl_easy_setopt(h, CURLOPT_READDATA, c);
    curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, &Call::Seek);
    curl_easy_setopt(h, CURLOPT_SEEKDATA, c);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(c->body_size));
  } else if (c->method != "GET") {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method.c_str());
  }

  CURLcode rc = curl_easy_perform(h);
  long http = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
  c->http_status = http;
  curl_off_t content_length = -1;
  curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &content_length);
  curl_slist_free_all(headers);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);

  if (c->local_errno != 0) {
    return Status::IOError(c->what + ": " + ErrnoText(c->local_what, c->local_errno));
  }
  if (rc != CURLE_OK) {
    std::string msg = c->what + ": " + curl_easy_strerror(rc);
    if (errbuf[0] != '\0') msg += std::string(" (") + Sanitize(errbuf) + ")";
    if (PermanentCurlError(rc)) {
      if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE) {
        msg += "; check the endpoint's certificate or set a CA bundle (AWS_CA_BUNDLE)";
      }
      return Status::InvalidArgument(msg);
    }
    *retryable = true;
    return Status::Unavailable(msg);
  }

  if (http >= 200 && http < 300) {
    bool has_sink = c->out_mem != nullptr || c->out_fd >= 0;
    if (has_sink && content_length >= 0 && static_cast<uint64_t>(content_length) != c->received) {
      *retryable = true;
      return Status::Unavailable(c->what + ": truncated response body: got " +
                                 std::to_string(c->received) + " of " +
                                 std::to_string(content_length) + " bytes");
    }
    return Status::OK();
  }

  // An S3 error: <Error><Code>..</Code><Message>..</Message></Error>.
  std::string code, message;
  {
    pugi::xml_document doc;
    if (!c->err_body.empty() && doc.load_buffer(c->err_body.data(), c->err_body.size())) {
      pugi::xml_node err = doc.child("Error");
      code = Sanitize(err.child_value("Code"), 100);
      message = Sanitize(err.child_value("Message"));
    }
  }
  std::string detail = "HTTP " + std::to_string(http);
  if (!code.empty()) detail += " " + code;
  if (!message.empty()) detail += ": " + message;
  if (code.empty() && message.empty() && !c->err_body.empty()) {
    detail += ": " + Sanitize(c->err_body, 200);
  }
  const std::string msg = c->what + ": " + detail;

  // A conditional PUT refused (S3 API Reference, PutObject: 412
  // PreconditionFailed; 409 ConditionalRequestConflict when a concurrent
  // write of the key was in progress): never retried as is, the caller
  // reads again.
  if (c->conditional && (http == 412 || (http == 409 && code == "ConditionalRequestConflict"))) {
    return Status::Conflict(msg);
  }
  if (http >= 500 || http == 429 || RetryableS3Code(code)) {
    *retryable = true;
    return Status::Unavailable(msg);
  }
  if (http == 404) {
    if (code == "NoSuchBucket") {
      return Status::InvalidArgument(c->what + ": bucket \"" + bucket_ + "\" does not exist (" +
                                     detail + ")");
    }
    if (c->missing_key_ok) return Status::OK();
    return Status::NotFound(msg);
  }
  if (http == 401 || http == 403) {
    return Status::Permission(msg + " (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                              "AWS_SESSION_TOKEN and the bucket policy)");
  }
  if (http >= 300 && http < 400) {
    return Status::InvalidArgument(msg + " (wrong region or endpoint for this bucket?)");
  }
  return Status::InvalidArgument(msg);
}

Status S3Store::Put(const std::string& key, std::string_view data,
                    const std::map<std::string, std::string>& metadata) {
  return PutMem(key, data, metadata, nullptr, nullptr);
}

Status S3Store::PutMem(const std::string& key, std::string_view data,
                       const std::map<std::string, std::string>& metadata,
                       const PutCondition* cond, std::string* etag) {
  TW_RETURN_IF_ERROR(ValidateObjectKey(key));
  TW_RETURN_IF_ERROR(ValidateMetadata(metadata));
  Call c;
  c.op = kPut;
  c.method = "PUT";
  std::string full = FullKey(key);
  c.path = ObjectPath(full);
  c.what = "PUT " + Describe(full);
  if (cond != nullptr) {
    c.conditional = true;
    if (cond->if_none_match) {
      c.what += " (If-None-Match: *)";
      c.extra_headers.emplace_back("if-none-match", "*");
    } else {
      c.what += " (If-Match)";
      c.extra_headers.emplace_back("if-match", "\"" + cond->if_match + "\"");
    }
  }
  for (const auto& [name, value] : metadata) c.extra_headers.emplace_back("x-amz-meta-" + name, value);
  c.body_mem = data;
  c.body_size = data.size();
  c.payload_sha256 = sigv4::Sha256Hex(data);
  Status s = Execute(&c);
  if (s.ok() && etag) *etag = c.resp_etag;
  return s;
}

Status S3Store::PutFile(const std::string& key, const std::string& path,
                        const std::map<std::string, std::string>& metadata) {
  TW_RETURN_IF_ERROR(ValidateObjectKey(key));
  TW_RETURN_IF_ERROR(ValidateMetadata(metadata));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError(ErrnoText("open " + path, errno));
  Call c;
  c.op = kPut;
  c.method = "PUT";
  std::string full = FullKey(key);
  c.path = ObjectPath(full);
  c.what = "PUT " + Describe(full);
  for (const auto& [name, value] : metadata) c.extra_headers.emplace_back("x-amz-meta-" + name, value);
  c.body_fd = fd;
  c.body_path = path;
  Status s = HashFile(fd, path, &c.body_size, &c.payload_sha256);
  if (s.ok()) s = Execute(&c);
  ::close(fd);
  return s;
}

Status S3Store::PutIf(const std::string& key, std::string_view data, const PutCondition& cond,
                      std::string* etag, const std::map<std::string, std::string>& metadata) {
  if (cond.if_none_match == !cond.if_match.empty()) {
    return Status::InvalidArgument("PutIf " + key + ": exactly one of If-None-Match and If-Match");
  }
  if (cond.if_match.find_first_of("\"\r\n") != std::string::npos) {
    return Status::InvalidArgument("PutIf " + key + ": bad ETag");
  }
  return PutMem(key, data, metadata, &cond, etag);
}

Status S3Store::GetWithEtag(const std::string& key, std::string* out, std::string* etag) {
  etag->clear();
  Status s = GetMem(key, out, etag);
  if (s.ok() && etag->empty()) return Status::IOError("GET " + key + ": the response has no ETag");
  return s;
}

Status S3Store::Get(const std::string& key, std::string* out) { return GetMem(key, out, nullptr); }

Status S3Store::GetMem(const std::string& key, std::string* out, std::string* etag) {
  out->clear();
  TW_RETURN_IF_ERROR(ValidateObjectKey(key));
  Call c;
  c.op = kGet;
  std::string full = FullKey(key);
  c.path = ObjectPath(full);
  c.what = "GET " + Describe(full);
  c.out_mem = out;
  Status s = Execute(&c);
  if (!s.ok()) out->clear();
  if (s.ok() && etag) *etag = c.resp_etag;
  return s;
}

Status S3Store::GetRange(const std::string& key, uint64_t offset, uint64_t length,
                         std::string* out) {
  out->clear();
  TW_RETURN_IF_ERROR(ValidateObjectKey(key));
  if (length == 0) return Status::OK();
  Call c;
  c.op = kGet;
  std::string full = FullKey(key);
  c.path = ObjectPath(full);
  uint64_t last = length > UINT64_MAX - offset ? UINT64_MAX - 1 : offset + length - 1;
  c.extra_headers.emplace_back("range",
                               "bytes=" + std::to_string(offset) + "-" + std::to_string(last));
  c.what = "GET " + Describe(full) + " (bytes " + std::to_string(offset) + "-" +
           std::to_string(last) + ")";
  c.out_mem = out;
  Status s = Execute(&c);
  if (!s.ok()) {
    out->clear();
    if (c.http_status == 416) return Status::OK();  // offset at or past the end
    return s;
  }
  if (c.http_status == 200) {  // Range ignored: the whole object
    if (offset >= out->size()) {
      out->clear();
      return Status::OK();
    }
    *out = out->substr(static_cast<size_t>(offset));
  }
  if (out->size() > length) out->resize(static_cast<size_t>(length));
  return Status::OK();
}

Status S3Store::GetToFile(const std::string& key, const std::string& path) {
  TW_RETURN_IF_ERROR(ValidateObjectKey(key));
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError(ErrnoText("open " + path, errno));
  Call c;
  c.op = kGet;
  std::string full = FullKey(key);
  c.path = ObjectPath(full);
  c.what = "GET " + Describe(full);
  c.out_fd = fd;
  c.out_path = path;
  Status s = Execute(&c);
  if (s.ok() && ::fsync(fd) != 0) s = Status::IOError(ErrnoText("fsync " + path, errno));
  if (::close(fd) != 0 && s.ok()) s = Status::IOError(ErrnoText("close " + path, errno));
  if (!s.ok()) ::unlink(path.c_str());
  return s;
}

Status S3Store::Delete(const std::string& key) {
  TW_RETURN_IF_ERROR(ValidateObjectKey(key));
  Call c;
  c.op = kDelete;
  c.method = "DELETE";
  std::string full = FullKey(key);
  c.path = ObjectPath(full);
  c.what = "DELETE " + Describe(full);
  c.missing_key_ok = true;
  return Execute(&c);
}

Status S3Store::List(const std::string& prefix, std::vector<ObjectInfo>* out) {
  out->clear();
  TW_RETURN_IF_ERROR(ValidateListPrefix(prefix));
  Status s = ListPages(prefix, /*dirs=*/false, out, nullptr);
  if (!s.ok()) {
    out->clear();
    return s;
  }
  std::sort(out->begin(), out->end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  return s;
}

Status S3Store::ListDirs(const std::string& prefix, std::vector<std::string>* out) {
  out->clear();
  TW_RETURN_IF_ERROR(ValidateListPrefix(prefix));
  Status s = ListPages(prefix, /*dirs=*/true, nullptr, out);
  if (!s.ok()) {
    out->clear();
    return s;
  }
  std::sort(out->begin(), out->end());
  return s;
}

Status S3Store::ListPages(const std::string& prefix, bool dirs, std::vector<ObjectInfo>* objects,
                          std::vector<std::string>* common_prefixes) {
  const std::string full = FullKey(prefix);
  const std::string strip = prefix_.empty() ? "" : prefix_ + "/";
  std::string token;
  for (uint64_t page = 0;; page++) {
    Call c;
    c.op = kList;
    c.path = BucketPath();
    c.what = "LIST " + Describe(full);
    c.query = {{"list-type", "2"}, {"max-keys", std::to_string(list_page_size_)}};
    if (!full.empty()) c.query.emplace_back("prefix", full);
    if (dirs) c.query.emplace_back("delimiter", "/");
    if (!token.empty()) c.query.emplace_back("continuation-token", token);
    std::string body;
    c.out_mem = &body;
    TW_RETURN_IF_ERROR(Execute(&c));

    pugi::xml_document doc;
    pugi::xml_parse_result parsed = doc.load_buffer(body.data(), body.size());
    pugi::xml_node root = doc.child("ListBucketResult");
    if (!parsed || !root) {
      return Status::Corruption(c.what + ": unparseable ListObjectsV2 response (page " +
                                std::to_string(page) + ")");
    }
    for (pugi::xml_node n : root.children("Contents")) {
      std::string key = n.child_value("Key");
      if (objects == nullptr || key.compare(0, strip.size(), strip) != 0) continue;
      ObjectInfo info;
      info.key = key.substr(strip.size());
      info.size = std::strtoull(n.child_value("Size"), nullptr, 10);
      std::string etag = n.child_value("ETag");
      if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
        etag = etag.substr(1, etag.size() - 2);
      }
      info.etag = std::move(etag);
      objects->push_back(std::move(info));
    }
    for (pugi::xml_node n : root.children("CommonPrefixes")) {
      std::string p = n.child_value("Prefix");
      if (common_prefixes == nullptr || p.compare(0, strip.size(), strip) != 0) continue;
      common_prefixes->push_back(p.substr(strip.size()));
    }
    if (std::string(root.child_value("IsTruncated")) != "true") return Status::OK();
    std::string next = root.child_value("NextContinuationToken");
    if (next.empty() || next == token) {
      return Status::Corruption(c.what +
                                ": truncated ListObjectsV2 page without a new continuation token");
    }
    token = std::move(next);
  }
}

}  // namespace tw
